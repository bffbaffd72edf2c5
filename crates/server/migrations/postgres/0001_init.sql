-- Parley schema v1 (PostgreSQL). Keep in step with migrations/sqlite/0001_init.sql.
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_ms    BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS rooms (
    name       TEXT PRIMARY KEY,
    last_seq   BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS messages (
    room   TEXT NOT NULL,
    seq    BIGINT NOT NULL,
    sender TEXT NOT NULL,
    body   TEXT NOT NULL,
    ts_ms  BIGINT NOT NULL,
    nonce  TEXT,
    PRIMARY KEY (room, seq)
);

CREATE UNIQUE INDEX IF NOT EXISTS messages_nonce
    ON messages (room, nonce, sender) WHERE nonce IS NOT NULL;

CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
