CREATE STREAM orders (order_id BIGINT, customer_id VARCHAR, amount DECIMAL(18,2), status VARCHAR);
SELECT customer_id, amount, order_id * 10 AS scaled
FROM orders
WHERE amount > 1000 AND status <> 'CANCELLED';
