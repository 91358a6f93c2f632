-- On a stream, ORDER BY sorts the rows of each window as it closes: here the symbols of each
-- minute by traded volume, largest first.
CREATE STREAM trades (symbol VARCHAR, quantity BIGINT, ts TIMESTAMP);
SELECT window_start, symbol, SUM(quantity) AS volume
FROM trades GROUP BY symbol WINDOW TUMBLING(ts, 1m)
ORDER BY window_start, volume DESC, symbol;
