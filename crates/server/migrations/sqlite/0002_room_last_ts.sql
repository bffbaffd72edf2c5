-- Parley schema v2 (SQLite): a room's last ts, so that ts never goes
-- backwards along seq (docs/protocol.md). Keep in step with
-- migrations/postgres/0003_room_last_ts.sql.
--
-- An append stamps its messages with the later of the commit's clock and
-- the room's last_ts, and moves last_ts up to that stamp in the same
-- transaction as last_seq. Existing rooms start from the newest ts their
-- messages hold (the max, not the last one's: older versions stamped ts
-- with the sending node's clock, which may have gone backwards).
ALTER TABLE rooms ADD COLUMN last_ts INTEGER NOT NULL DEFAULT 0;

UPDATE rooms
SET last_ts = COALESCE((SELECT max(m.ts_ms) FROM messages m WHERE m.room = rooms.name), 0);
