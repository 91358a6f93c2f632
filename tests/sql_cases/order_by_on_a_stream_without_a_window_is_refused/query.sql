CREATE STREAM orders (customer_id VARCHAR, amount DECIMAL(10,2));
SELECT customer_id, amount FROM orders ORDER BY amount DESC;
