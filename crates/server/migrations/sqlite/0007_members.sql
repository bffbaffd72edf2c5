-- Parley schema v7 (SQLite): rooms with members, roles, bans and topics
-- (protocol 1.1 §3). Keep in step with migrations/postgres/0008_members.sql.
--
-- A private room is seen, read and joined by its members only (and server
-- admins); a public one is joined by anyone it has not banned. Who is a
-- member is stored, so it outlives connections: `members` is the room's
-- current list, changed in the transaction that appends the `member` event
-- which changes it (join of a public room and the creation of a room
-- excepted: those are not events). The rules (store::members) read it in
-- that transaction, with the room held.
ALTER TABLE rooms ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN topic TEXT NOT NULL DEFAULT '';

-- One row per member: keyed by the case-folded name (the user's
-- identity), `username` the spelling it was added or joined with.
-- `role`: owner, moderator or member.
CREATE TABLE IF NOT EXISTS members (
    room     TEXT NOT NULL,
    user_key TEXT NOT NULL,
    username TEXT NOT NULL,
    role     TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (room, user_key)
) WITHOUT ROWID;

-- A user's rooms (the room list, search's private rooms).
CREATE INDEX IF NOT EXISTS members_user ON members (user_key, room);

-- Who may not join again (a ban also ends the membership).
CREATE TABLE IF NOT EXISTS bans (
    room     TEXT NOT NULL,
    user_key TEXT NOT NULL,
    username TEXT NOT NULL,
    by_user  TEXT NOT NULL,
    reason   TEXT NOT NULL DEFAULT '',
    at_ms    INTEGER NOT NULL,
    PRIMARY KEY (room, user_key)
) WITHOUT ROWID;

-- A `member` event's columns: the user it is about (`subject`), what
-- changed (`member_change`: added, removed, banned, unbanned, role) and the
-- role given. `body` holds a ban's reason, or a `topic` event's topic.
-- Neither kind is searchable nor counted unread: the search triggers
-- (0006) and the unread count read `kind = 'message'` rows only.
ALTER TABLE messages ADD COLUMN subject TEXT;
ALTER TABLE messages ADD COLUMN member_change TEXT;
ALTER TABLE messages ADD COLUMN role TEXT;

-- Before this version, whoever read a room was in it: a user with a read
-- position in a room (DMs aside: their members are in their name) becomes
-- a member, under its registered spelling when it has an account. Rooms
-- from before have no owner; a server admin can give the role.
INSERT INTO members (room, user_key, username, role, since_ms)
SELECT rs.room, rs.user_key,
       COALESCE((SELECT u.name FROM users u WHERE u.name_key = rs.user_key), rs.user_key),
       'member',
       CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
FROM read_state rs
JOIN rooms r ON r.name = rs.room
WHERE substr(rs.room, 1, 3) <> 'dm:'
ON CONFLICT (room, user_key) DO NOTHING;
