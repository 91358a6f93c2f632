-- timestamp() is the processing time: when the row's micro-batch is evaluated (not its event
-- time, not when the query was planned).
CREATE STREAM alerts (device_id VARCHAR, ts TIMESTAMP);
SELECT device_id,
  timestamp() > TIMESTAMP '2026-01-01 00:00:00' AS after_2026,
  timestamp() > ts AS after_event,
  timestamp() IS NULL AS missing
FROM alerts;
