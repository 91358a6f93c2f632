CREATE STREAM events (k VARCHAR, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts);
SELECT window_start, window_end, k, SUM(v) AS total, COUNT(*) AS n
FROM events
GROUP BY k
WINDOW SLIDING(ts, 10s, 5s);
