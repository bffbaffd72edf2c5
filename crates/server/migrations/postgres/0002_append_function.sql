-- Parley schema v2 (PostgreSQL): a group commit's append in one call.
--
-- parley_append stores one batch of messages and answers for each, by its
-- 1-based position in the arrays: the seq it got, or — a repeated
-- (room, sender, nonce) — the original's seq, body and time. One statement,
-- so one round trip and one implicit transaction per batch, however many
-- rooms the batch touches: under load the round trips, not the work, were
-- what a batch waited for.
--
-- Invariant 2 (gapless seq per room): every room of the batch is locked,
-- in name order (the same order on every node, so no two batches deadlock),
-- before anything is read or numbered; seqs are last_seq + 1 … last_seq + n.
CREATE OR REPLACE FUNCTION parley_append(
    p_room   TEXT[],
    p_sender TEXT[],
    p_body   TEXT[],
    p_ts     BIGINT[],
    p_nonce  TEXT[]
) RETURNS TABLE (out_ord INT, out_seq BIGINT, out_dup BOOLEAN, out_body TEXT, out_ts BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rooms (name, last_seq, created_ms)
        SELECT DISTINCT ON (t.room) t.room, 0, t.ts
        FROM unnest(p_room, p_ts) AS t(room, ts)
        ORDER BY t.room
        ON CONFLICT (name) DO NOTHING;
    PERFORM 1 FROM rooms WHERE name = ANY(p_room) ORDER BY name FOR UPDATE;

    -- A new statement, so a new snapshot: it sees every message committed
    -- by whoever held these rooms' locks before us.
    RETURN QUERY
    WITH input AS (
        SELECT t.ord::INT AS ord, t.room, t.sender, t.body, t.ts, t.nonce
        FROM unnest(p_room, p_sender, p_body, p_ts, p_nonce)
            WITH ORDINALITY AS t(room, sender, body, ts, nonce, ord)
    ),
    known AS (
        SELECT i.ord, m.seq, m.body, m.ts_ms
        FROM input i
        JOIN messages m ON m.room = i.room AND m.nonce = i.nonce AND m.sender = i.sender
        WHERE i.nonce IS NOT NULL
    ),
    firsts AS (
        SELECT i.*,
               CASE WHEN i.nonce IS NULL THEN i.ord
                    ELSE min(i.ord) OVER (PARTITION BY i.room, i.sender, i.nonce)
               END AS first_ord
        FROM input i
        WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.ord = i.ord)
    ),
    fresh AS (
        SELECT f.ord, f.room, f.sender, f.body, f.ts, f.nonce,
               row_number() OVER (PARTITION BY f.room ORDER BY f.ord) AS k
        FROM firsts f
        WHERE f.ord = f.first_ord
    ),
    counts AS (
        SELECT fr.room, count(*) AS n FROM fresh fr GROUP BY fr.room
    ),
    bumped AS (
        UPDATE rooms SET last_seq = rooms.last_seq + c.n
        FROM counts c
        WHERE rooms.name = c.room
        RETURNING rooms.name, rooms.last_seq - c.n AS base
    ),
    numbered AS (
        SELECT fr.ord, fr.room, fr.sender, fr.body, fr.ts, fr.nonce, b.base + fr.k AS seq
        FROM fresh fr
        JOIN bumped b ON b.name = fr.room
    ),
    inserted AS (
        INSERT INTO messages (room, seq, sender, body, ts_ms, nonce)
        SELECT n.room, n.seq, n.sender, n.body, n.ts, n.nonce FROM numbered n
    )
    SELECT n.ord, n.seq, FALSE, NULL::TEXT, n.ts FROM numbered n
    UNION ALL
    SELECT k.ord, k.seq, TRUE, k.body, k.ts_ms FROM known k
    UNION ALL
    SELECT f.ord, n.seq, TRUE, n.body, n.ts
    FROM firsts f
    JOIN numbered n ON n.ord = f.first_ord
    WHERE f.ord <> f.first_ord;
END;
$$;
