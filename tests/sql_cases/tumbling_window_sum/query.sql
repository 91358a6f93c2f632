CREATE STREAM trades (symbol VARCHAR, price DECIMAL(18,4), quantity BIGINT, ts TIMESTAMP,
                      WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);
SELECT symbol, COUNT(*) AS trades, SUM(price * quantity) AS notional, MAX(price) AS high
FROM trades
WINDOW TUMBLING (INTERVAL 1 MINUTE)
GROUP BY symbol;
