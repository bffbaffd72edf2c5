-- Parley schema v5 (SQLite): read positions (protocol 1.1 §2). Keep in step
-- with migrations/postgres/0006_read_state.sql.
--
-- One row per (user, room) the user has read in: the seq up to which they
-- have read, only ever moved forward. Unread counts are computed from it and
-- the room's messages after it (a range of the primary key, capped), so
-- nothing is written per message.
CREATE TABLE IF NOT EXISTS read_state (
    user_key TEXT NOT NULL,
    room     TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (user_key, room)
) WITHOUT ROWID;
