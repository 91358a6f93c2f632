CREATE STREAM trades (symbol VARCHAR, price DECIMAL(10,2), quantity BIGINT, ts TIMESTAMP,
                      WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE);
SELECT symbol,
       FIRST_VALUE(price ORDER BY ts) AS open,
       LAST_VALUE(price ORDER BY ts) AS close,
       COUNT(DISTINCT quantity) AS sizes,
       SUM(quantity) FILTER (WHERE price > 100) AS big_volume,
       AVG(price) AS mean,
       STDDEV_POP(quantity) AS sd
FROM trades
GROUP BY symbol, TUMBLE(ts, INTERVAL '1' HOUR)
HAVING COUNT(*) > 1;
