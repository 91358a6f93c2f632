-- An example application for Dockerfile.sqlfile and the compose stack: large orders out of the
-- `orders` topic, and a per-minute revenue per customer.
CREATE STREAM orders (order_id BIGINT, customer_id BIGINT, amount DECIMAL(12,2), ts TIMESTAMP)
WITH ('topic' = 'orders', 'event_time' = 'ts', 'watermark_delay' = '5s');

START JOB large_orders AS
SELECT order_id, customer_id, amount FROM orders WHERE amount > 1000
WITH ('sink.topic' = 'large_orders');

START JOB revenue_per_minute AS
SELECT customer_id, COUNT(*) AS orders, SUM(amount) AS revenue
FROM orders
GROUP BY customer_id, TUMBLE(ts, INTERVAL '1' MINUTE)
WITH ('sink.topic' = 'revenue_per_minute');
