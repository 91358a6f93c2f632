CREATE STREAM trades (symbol VARCHAR, price DECIMAL(18,4));
CREATE TABLE instruments (symbol VARCHAR, sector VARCHAR, lot BIGINT)
  WITH ('path' = 'tests/sql_cases/lookup_join/instruments.csv', 'format' = 'csv');
CREATE TABLE sectors (sector VARCHAR, risk VARCHAR)
  WITH ('path' = 'tests/sql_cases/inner_lookup_join_two_tables/sectors.jsonl', 'format' = 'json');
SELECT t.symbol, i.sector, s.risk
FROM trades t
JOIN instruments i ON t.symbol = i.symbol
JOIN sectors s ON i.sector = s.sector AND t.price > 100;
