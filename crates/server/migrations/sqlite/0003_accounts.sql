-- Parley schema v3 (SQLite): accounts and sessions (protocol-chat.md §5).
-- Keep in step with migrations/postgres/0004_accounts.sql.
--
-- Usernames are unique case-insensitively. `name` keeps the spelling the
-- user registered with (shown everywhere); `name_key` is its ASCII-lowercase
-- form, the user's identity, unique. Accounts of an older version whose
-- names differ only in case get no key here: a node refuses to start while
-- an enabled account has none (store::Store::name_collisions), until the
-- operator disables all but one of each group (`parley admin user disable`),
-- which frees the key for the one left (docs/operations.md).
--
-- `changed_ms` dates the last change nodes must learn of (key assigned,
-- disabled, enabled): each node reads the rows changed since its last look,
-- every PARLEY_REVOCATION_REFRESH.
ALTER TABLE users ADD COLUMN name_key TEXT;
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user';
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN changed_ms INTEGER NOT NULL DEFAULT 0;

UPDATE users SET name_key = lower(name)
WHERE lower(name) IN (SELECT lower(name) FROM users GROUP BY lower(name) HAVING count(*) = 1);

CREATE UNIQUE INDEX IF NOT EXISTS users_name_key ON users (name_key);
CREATE INDEX IF NOT EXISTS users_changed ON users (changed_ms);

-- logout-all (and a password change, and disabling a user): every token of
-- the user whose `iat` is before `tokens_after_s` is refused. Keyed by the
-- case-folded name, so that it also covers users who never registered (an
-- operator's backend mints their tokens).
CREATE TABLE IF NOT EXISTS user_revocations (
    user_key       TEXT PRIMARY KEY,
    tokens_after_s INTEGER NOT NULL,
    changed_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS user_revocations_changed ON user_revocations (changed_ms);

-- logout: one token, by the SHA-256 of its text (hex); kept until it has
-- expired anyway.
CREATE TABLE IF NOT EXISTS revoked_tokens (
    token_id   TEXT PRIMARY KEY,
    user_key   TEXT NOT NULL,
    exp_s      INTEGER NOT NULL,
    revoked_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_tokens_revoked ON revoked_tokens (revoked_ms);
CREATE INDEX IF NOT EXISTS revoked_tokens_exp ON revoked_tokens (exp_s);

-- Login attempts, for throttling (cluster-wide, as the store is shared): a
-- row per attempt under way or failed within the window; a success deletes
-- the user's rows.
CREATE TABLE IF NOT EXISTS login_failures (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    user_key TEXT NOT NULL,
    addr     TEXT NOT NULL,
    at_ms    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_user ON login_failures (user_key, at_ms);
CREATE INDEX IF NOT EXISTS login_failures_addr ON login_failures (addr, at_ms);
CREATE INDEX IF NOT EXISTS login_failures_at ON login_failures (at_ms);

-- DM rooms are named after the case-folded names (dm:alice:bob). Rooms of
-- an older version named after other spellings (dm:Bob:alice) are renamed,
-- messages and all, unless the new name is taken (by a room, or by another
-- old room that folds the same way: their seqs cannot be merged). Those stay
-- as they were, out of reach; a node logs them when it starts.
CREATE TEMP TABLE dm_renames AS
SELECT old, 'dm:' || min(la, lb) || ':' || max(la, lb) AS new
FROM (
    SELECT name AS old,
           lower(substr(name, 4, instr(substr(name, 4), ':') - 1)) AS la,
           lower(substr(substr(name, 4), instr(substr(name, 4), ':') + 1)) AS lb
    FROM rooms
    WHERE substr(name, 1, 3) = 'dm:' AND name <> lower(name) AND instr(substr(name, 4), ':') > 0
)
WHERE la <> lb;

DELETE FROM dm_renames
WHERE new IN (SELECT name FROM rooms)
   OR new IN (SELECT new FROM dm_renames GROUP BY new HAVING count(*) > 1);

UPDATE messages SET room = (SELECT new FROM dm_renames WHERE old = messages.room)
WHERE room IN (SELECT old FROM dm_renames);

UPDATE rooms SET name = (SELECT new FROM dm_renames WHERE old = rooms.name)
WHERE name IN (SELECT old FROM dm_renames);

DROP TABLE dm_renames;
