CREATE STREAM s (name VARCHAR, ts TIMESTAMP);
SELECT upper(name) AS name, length(name) AS len, ts, date_trunc('hour', ts) AS hour, ts > TIMESTAMP '2024-01-01 12:00:00' AS afternoon
FROM s;
