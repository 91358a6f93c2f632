-- The type as a string after a comma, as other streaming engines write it.
CREATE STREAM sensor_data (payload VARCHAR);
SELECT
  JSON_VALUE(payload, '$.device_id') AS device_id,
  CAST(JSON_VALUE(payload, '$.temperature'), 'DOUBLE') AS temp,
  CAST(JSON_VALUE(payload, '$.reading'), 'DECIMAL(10,3)') AS reading,
  CASE WHEN CAST(JSON_VALUE(payload, '$.temperature'), 'FLOAT') > 75.0
       THEN 'HIGH' ELSE 'NORMAL' END AS alert_level
FROM sensor_data
WHERE JSON_VALUE(payload, '$.sensor_type') = 'temperature';
