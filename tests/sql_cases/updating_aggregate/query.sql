CREATE STREAM orders (customer VARCHAR, amount DECIMAL(10,2));
SELECT customer, COUNT(*) AS orders, SUM(amount) AS total
FROM orders GROUP BY customer HAVING SUM(amount) > 10;
