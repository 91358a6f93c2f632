-- "100.00" names no column, so it is read as the string '100.00' (with a warning), as the
-- deployment guide writes it; "symbol" names a column and stays one.
CREATE STREAM trades (symbol VARCHAR, price DECIMAL(18,4), quantity BIGINT);
SELECT "symbol", price, quantity, price * quantity AS total
FROM trades WHERE price > "100.00" AND "symbol" <> "IBM";
