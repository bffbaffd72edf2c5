-- Parley schema v5 (PostgreSQL): the room is an event log (protocol 1.1 §1).
-- Keep in step with migrations/sqlite/0004_events.sql, which explains the
-- columns. Adding columns with constant defaults does not rewrite the
-- table (PostgreSQL 11+): the migration is instant whatever its size.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'message';
ALTER TABLE messages ADD COLUMN IF NOT EXISTS target BIGINT;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS emoji TEXT;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS reaction_on BOOLEAN;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS reply_to BIGINT;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS edited_ms BIGINT;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS deleted BOOLEAN NOT NULL DEFAULT false;

CREATE TABLE IF NOT EXISTS reactions (
    room     TEXT NOT NULL,
    target   BIGINT NOT NULL,
    emoji    TEXT NOT NULL,
    user_key TEXT NOT NULL,
    username TEXT NOT NULL,
    on_state BOOLEAN NOT NULL,
    seq      BIGINT NOT NULL,
    PRIMARY KEY (room, target, emoji, user_key)
);
