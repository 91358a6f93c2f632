CREATE STREAM t (id BIGINT, price DECIMAL(18,4), quantity DECIMAL(38,0));
SELECT id,
       ROUND(price, 2) AS price_2dp,
       ROUND(price, 0) AS whole,
       price * quantity AS notional
FROM t;
