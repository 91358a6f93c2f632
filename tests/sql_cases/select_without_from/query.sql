-- A query that reads no stream is answered at once (a connectivity check, as in the guide).
SELECT 1 AS test_value, 'ok' AS status, CAST('2.50' AS DECIMAL(5,2)) * 2 AS amount LIMIT 1;
