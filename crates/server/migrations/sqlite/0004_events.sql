-- Parley schema v4 (SQLite): the room is an event log (protocol 1.1 §1).
-- Keep in step with migrations/postgres/0005_events.sql.
--
-- Edits, deletes and reactions are rows of `messages` too, with the room's
-- next seq, so that resume (`since`) replays them exactly once like
-- messages. A message row also holds its current state, updated in the
-- transaction that appends the event which changes it: its latest text
-- (`body`, '' once deleted), `edited_ms`, `deleted`. History pages read
-- that state instead of folding the log, so a page costs the same whatever
-- the room's age.
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
-- edited, deleted, reaction: the seq of the message they change.
ALTER TABLE messages ADD COLUMN target INTEGER;
-- reaction: the emoji, and 1 added / 0 removed.
ALTER TABLE messages ADD COLUMN emoji TEXT;
ALTER TABLE messages ADD COLUMN reaction_on INTEGER;
-- message: the seq of the message it answers.
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
-- message: when it was last edited, and whether it is deleted.
ALTER TABLE messages ADD COLUMN edited_ms INTEGER;
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;

-- The current reactions, one row per (message, emoji, user) ever reacted:
-- `on_state` is the current state and `seq` the event that set it (the ack
-- of a reaction that changes nothing carries it). A history page reads the
-- rows of its messages in one query.
CREATE TABLE IF NOT EXISTS reactions (
    room     TEXT NOT NULL,
    target   INTEGER NOT NULL,
    emoji    TEXT NOT NULL,
    user_key TEXT NOT NULL,
    username TEXT NOT NULL,
    on_state INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (room, target, emoji, user_key)
) WITHOUT ROWID;
