CREATE STREAM clicks (user_id VARCHAR, ts TIMESTAMP);
SELECT user_id, window_start, window_end, COUNT(*) AS clicks
FROM clicks GROUP BY user_id WINDOW SESSION(ts, 5s) EMIT CHANGES;
