-- Parley schema v6 (PostgreSQL): read positions (protocol 1.1 §2). Keep in
-- step with migrations/sqlite/0005_read_state.sql, which explains them.
CREATE TABLE IF NOT EXISTS read_state (
    user_key TEXT NOT NULL,
    room     TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    PRIMARY KEY (user_key, room)
);
