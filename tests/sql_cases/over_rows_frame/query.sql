CREATE STREAM trades (symbol VARCHAR, price DECIMAL(10,2), ts TIMESTAMP,
                      WATERMARK FOR ts AS ts - INTERVAL '5' SECOND);
SELECT symbol, ts, price,
       AVG(price) OVER (PARTITION BY symbol ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg3,
       MAX(price) OVER (PARTITION BY symbol ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS max3,
       ROW_NUMBER() OVER (PARTITION BY symbol ORDER BY ts) AS n,
       LAG(price) OVER (PARTITION BY symbol ORDER BY ts) AS previous
FROM trades;
