-- Parley schema v3 (PostgreSQL): ts never goes backwards along seq in a
-- room (docs/protocol.md). Keep in step with
-- migrations/sqlite/0002_room_last_ts.sql.
--
-- rooms.last_ts is the ts of the room's newest message. parley_append now
-- stamps ts itself, in the statement that assigns seq: the database
-- server's clock (one clock for the whole fleet, whatever the nodes' clocks
-- say), read once the batch's rooms are locked, and never below the room's
-- last_ts: a clock stepped back stamps the previous ts again instead
-- of going back in time. The nodes' p_ts only dates a room created by the
-- batch.
--
-- Existing rooms start from the newest ts their messages hold (the max,
-- not the last one's: older versions stamped ts with the sending node's
-- clock, which may have gone backwards). This reads every message once,
-- while the migration holds the rooms table: appends wait for it.
ALTER TABLE rooms ADD COLUMN IF NOT EXISTS last_ts BIGINT NOT NULL DEFAULT 0;

UPDATE rooms r
SET last_ts = m.max_ts
FROM (SELECT room, max(ts_ms) AS max_ts FROM messages GROUP BY room) m
WHERE m.room = r.name AND m.max_ts > r.last_ts;

-- As in 0002_append_function.sql, except the stamp (see above). Nodes of
-- an older version call this one too once it is installed, so a rolling
-- update stamps every message the new way from the first upgraded node on.
CREATE OR REPLACE FUNCTION parley_append(
    p_room   TEXT[],
    p_sender TEXT[],
    p_body   TEXT[],
    p_ts     BIGINT[],
    p_nonce  TEXT[]
) RETURNS TABLE (out_ord INT, out_seq BIGINT, out_dup BOOLEAN, out_body TEXT, out_ts BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    v_now BIGINT;
BEGIN
    INSERT INTO rooms (name, last_seq, created_ms)
        SELECT DISTINCT ON (t.room) t.room, 0, t.ts
        FROM unnest(p_room, p_ts) AS t(room, ts)
        ORDER BY t.room
        ON CONFLICT (name) DO NOTHING;
    PERFORM 1 FROM rooms WHERE name = ANY(p_room) ORDER BY name FOR UPDATE;

    -- Read after the locks: a batch that waited for another's commit reads
    -- a later time than the one it waited for (and last_ts covers a clock
    -- that went backwards meanwhile).
    v_now := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;

    -- A new statement, so a new snapshot: it sees every message committed
    -- by whoever held these rooms' locks before us.
    RETURN QUERY
    WITH input AS (
        SELECT t.ord::INT AS ord, t.room, t.sender, t.body, t.nonce
        FROM unnest(p_room, p_sender, p_body, p_nonce)
            WITH ORDINALITY AS t(room, sender, body, nonce, ord)
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
        SELECT f.ord, f.room, f.sender, f.body, f.nonce,
               row_number() OVER (PARTITION BY f.room ORDER BY f.ord) AS k
        FROM firsts f
        WHERE f.ord = f.first_ord
    ),
    counts AS (
        SELECT fr.room, count(*) AS n FROM fresh fr GROUP BY fr.room
    ),
    bumped AS (
        UPDATE rooms SET last_seq = rooms.last_seq + c.n,
                         last_ts = greatest(rooms.last_ts, v_now)
        FROM counts c
        WHERE rooms.name = c.room
        RETURNING rooms.name, rooms.last_seq - c.n AS base, rooms.last_ts AS stamp
    ),
    numbered AS (
        SELECT fr.ord, fr.room, fr.sender, fr.body, b.stamp AS ts, fr.nonce, b.base + fr.k AS seq
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
