-- execute reads a bounded input, so ORDER BY sorts all of it (the guide's
-- `ORDER BY timestamp DESC`), ties broken by the next key, NULLs last when ascending.
CREATE STREAM orders (customer_id VARCHAR, amount DECIMAL(10,2), "timestamp" TIMESTAMP);
SELECT customer_id, amount, "timestamp"
FROM orders ORDER BY "timestamp" DESC, customer_id LIMIT 4;
