CREATE STREAM trades (symbol VARCHAR, price DECIMAL(18,4), quantity BIGINT, fee DECIMAL(10,2));
SELECT symbol,
       price * quantity AS notional,
       price + fee AS with_fee,
       price - 0.0001 AS tick_below,
       CAST(price AS DECIMAL(18,2)) AS price_2dp,
       price > '150.25' AS above
FROM trades;
