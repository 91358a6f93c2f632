CREATE STREAM clicks (page VARCHAR, ts TIMESTAMP);
CREATE STREAM views (page VARCHAR, ms BIGINT, ts TIMESTAMP);
-- Per page and minute: clicks next to the time spent, both sides windowed the same way.
SELECT c.page, c.window_start, c.clicks, v.views, v.total_ms
FROM (SELECT page, window_start, COUNT(*) AS clicks FROM clicks
      GROUP BY page, TUMBLE(ts, INTERVAL '1' MINUTE)) c
JOIN (SELECT page, window_start, COUNT(*) AS views, SUM(ms) AS total_ms FROM views
      GROUP BY page, TUMBLE(ts, INTERVAL '1' MINUTE)) v
  ON c.page = v.page AND c.window_start = v.window_start;
