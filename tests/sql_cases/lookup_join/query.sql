CREATE STREAM trades (symbol VARCHAR, price DECIMAL(18,4), quantity BIGINT);
CREATE TABLE instruments (symbol VARCHAR, sector VARCHAR, lot BIGINT)
  WITH ('path' = 'tests/sql_cases/lookup_join/instruments.csv', 'format' = 'csv');
SELECT t.symbol, t.price, r.sector, t.quantity * r.lot AS shares
FROM trades t LEFT JOIN instruments r ON t.symbol = r.symbol
WHERE t.price > 1;
