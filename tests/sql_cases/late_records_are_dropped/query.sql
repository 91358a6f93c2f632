CREATE STREAM readings (sensor VARCHAR, value BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND);
SELECT sensor, COUNT(*) AS n, SUM(value) AS total
FROM readings
GROUP BY sensor, TUMBLE(ts, INTERVAL '10' SECOND);
