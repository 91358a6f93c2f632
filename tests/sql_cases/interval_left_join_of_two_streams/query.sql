CREATE STREAM orders (id BIGINT, customer VARCHAR, amount DECIMAL(10,2), ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND);
CREATE STREAM payments (order_id BIGINT, paid DECIMAL(10,2), ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND);
-- Each order with the payments made within 30 s of it; an order never paid in time appears
-- once with NULLs, when the watermark proves nothing can match it any more.
SELECT o.id, o.customer, o.amount, p.paid, p.ts AS paid_at
FROM orders o LEFT JOIN payments p
  ON p.order_id = o.id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '30' SECOND;
