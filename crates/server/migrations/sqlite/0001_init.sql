-- Parley schema v1 (SQLite). Keep in step with migrations/postgres/0001_init.sql.
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_ms    INTEGER NOT NULL
);

-- One row per room: last_seq is bumped in the same transaction as the insert
-- of the message that takes it, which is what makes seq gapless (invariant 2).
CREATE TABLE IF NOT EXISTS rooms (
    name       TEXT PRIMARY KEY,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS messages (
    room   TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    sender TEXT NOT NULL,
    body   TEXT NOT NULL,
    ts_ms  INTEGER NOT NULL,
    nonce  TEXT,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;

-- Idempotent sends: one (room, sender, nonce) is stored once. Nonce before
-- sender, so that looking up a batch's nonces in a room probes the index.
CREATE UNIQUE INDEX IF NOT EXISTS messages_nonce
    ON messages (room, nonce, sender) WHERE nonce IS NOT NULL;

CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
