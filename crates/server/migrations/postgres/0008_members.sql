-- Parley schema v8 (PostgreSQL): rooms with members, roles, bans and
-- topics (protocol 1.1 §3). Keep in step with
-- migrations/sqlite/0007_members.sql, which explains each part. Columns
-- added with constant defaults (or none) do not rewrite a table.
ALTER TABLE rooms ADD COLUMN IF NOT EXISTS private BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE rooms ADD COLUMN IF NOT EXISTS topic TEXT NOT NULL DEFAULT '';

CREATE TABLE IF NOT EXISTS members (
    room     TEXT NOT NULL,
    user_key TEXT NOT NULL,
    username TEXT NOT NULL,
    role     TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    PRIMARY KEY (room, user_key)
);
CREATE INDEX IF NOT EXISTS members_user ON members (user_key, room);

CREATE TABLE IF NOT EXISTS bans (
    room     TEXT NOT NULL,
    user_key TEXT NOT NULL,
    username TEXT NOT NULL,
    by_user  TEXT NOT NULL,
    reason   TEXT NOT NULL DEFAULT '',
    at_ms    BIGINT NOT NULL,
    PRIMARY KEY (room, user_key)
);

-- Member events: the generated search column (0007) is NULL for every
-- kind but `message`, and the unread count reads `kind = 'message'` only.
-- parley_append (0003) inserts plain messages, which leave these NULL.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS subject TEXT;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS member_change TEXT;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS role TEXT;

INSERT INTO members (room, user_key, username, role, since_ms)
SELECT rs.room, rs.user_key,
       COALESCE((SELECT u.name FROM users u WHERE u.name_key = rs.user_key), rs.user_key),
       'member',
       (extract(epoch FROM clock_timestamp()) * 1000)::int8
FROM read_state rs
JOIN rooms r ON r.name = rs.room
WHERE NOT starts_with(rs.room, 'dm:')
ON CONFLICT (room, user_key) DO NOTHING;
