-- Columns may be named like the clauses VeloStream adds to SQL (EMIT, WINDOW, WITHIN).
CREATE STREAM events (emit VARCHAR, "window" BIGINT, within BIGINT, changes BIGINT);
SELECT emit, "window" + within AS total, changes FROM events WHERE emit <> 'skip';
