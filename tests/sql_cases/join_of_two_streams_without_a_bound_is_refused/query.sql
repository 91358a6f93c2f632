CREATE STREAM orders (id BIGINT, ts TIMESTAMP);
CREATE STREAM payments (order_id BIGINT, ts TIMESTAMP);
SELECT o.id, p.ts FROM orders o JOIN payments p ON p.order_id = o.id;
