CREATE STREAM events (id BIGINT, payload VARCHAR);
SELECT id,
       JSON_VALUE(payload, '$.user.name') AS user_name,
       JSON_VALUE(payload, '$.items[1].sku') AS second_sku,
       CASE WHEN JSON_VALUE(payload, '$.vip') = 'true' THEN 'vip'
            WHEN JSON_VALUE(payload, '$.user.name') IS NULL THEN 'anonymous'
            ELSE 'regular' END AS segment
FROM events;
