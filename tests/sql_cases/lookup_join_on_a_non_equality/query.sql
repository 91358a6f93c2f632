-- A stream joined to a file table on a condition with no equality: every table row is tried.
CREATE STREAM trades (symbol VARCHAR, price DECIMAL(18,4));
CREATE TABLE limits (symbol VARCHAR, ceiling DECIMAL(18,4))
  WITH ('path' = 'tests/sql_cases/lookup_join_on_a_non_equality/limits.csv', 'format' = 'csv');
SELECT t.symbol, t.price, l.symbol AS other
FROM trades t JOIN limits l ON t.symbol <> l.symbol AND t.price > l.ceiling;
