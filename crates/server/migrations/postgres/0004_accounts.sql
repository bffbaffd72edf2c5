-- Parley schema v4 (PostgreSQL): accounts and sessions (protocol-chat.md §5).
-- Keep in step with migrations/sqlite/0003_accounts.sql, which explains
-- each part. Names are ASCII, folded with the "C" collation's lower() (ASCII
-- only, whatever the database's locale) and sorted bytewise, as the nodes do.
ALTER TABLE users ADD COLUMN IF NOT EXISTS name_key TEXT;
ALTER TABLE users ADD COLUMN IF NOT EXISTS role TEXT NOT NULL DEFAULT 'user';
ALTER TABLE users ADD COLUMN IF NOT EXISTS disabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN IF NOT EXISTS changed_ms BIGINT NOT NULL DEFAULT 0;

UPDATE users SET name_key = lower(name COLLATE "C")
WHERE lower(name COLLATE "C") IN (
    SELECT lower(name COLLATE "C") FROM users GROUP BY lower(name COLLATE "C") HAVING count(*) = 1
);

CREATE UNIQUE INDEX IF NOT EXISTS users_name_key ON users (name_key);
CREATE INDEX IF NOT EXISTS users_changed ON users (changed_ms);

CREATE TABLE IF NOT EXISTS user_revocations (
    user_key       TEXT PRIMARY KEY,
    tokens_after_s BIGINT NOT NULL,
    changed_ms     BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS user_revocations_changed ON user_revocations (changed_ms);

CREATE TABLE IF NOT EXISTS revoked_tokens (
    token_id   TEXT PRIMARY KEY,
    user_key   TEXT NOT NULL,
    exp_s      BIGINT NOT NULL,
    revoked_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_tokens_revoked ON revoked_tokens (revoked_ms);
CREATE INDEX IF NOT EXISTS revoked_tokens_exp ON revoked_tokens (exp_s);

CREATE TABLE IF NOT EXISTS login_failures (
    id       BIGSERIAL PRIMARY KEY,
    user_key TEXT NOT NULL,
    addr     TEXT NOT NULL,
    at_ms    BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_user ON login_failures (user_key, at_ms);
CREATE INDEX IF NOT EXISTS login_failures_addr ON login_failures (addr, at_ms);
CREATE INDEX IF NOT EXISTS login_failures_at ON login_failures (at_ms);

-- DM rooms of older spellings are renamed to the case-folded names (see
-- the SQLite migration).
CREATE TEMP TABLE dm_renames AS
SELECT old, 'dm:' || least(la, lb) || ':' || greatest(la, lb) AS new
FROM (
    SELECT name AS old,
           lower(split_part(name, ':', 2) COLLATE "C") COLLATE "C" AS la,
           lower(split_part(name, ':', 3) COLLATE "C") COLLATE "C" AS lb
    FROM rooms
    WHERE left(name, 3) = 'dm:' AND name <> lower(name COLLATE "C")
      AND split_part(name, ':', 3) <> '' AND split_part(name, ':', 4) = ''
) legacy
WHERE la <> lb;

DELETE FROM dm_renames
WHERE new IN (SELECT name FROM rooms)
   OR new IN (SELECT new FROM dm_renames GROUP BY new HAVING count(*) > 1);

UPDATE messages m SET room = r.new FROM dm_renames r WHERE m.room = r.old;
UPDATE rooms SET name = r.new FROM dm_renames r WHERE rooms.name = r.old;

DROP TABLE dm_renames;
