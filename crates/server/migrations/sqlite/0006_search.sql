-- Full-text search (protocol 1.1 §4). `messages` has no rowid (WITHOUT
-- ROWID), and FTS5 rows are named by one: `search_keys` gives every
-- searchable message a rowid, in commit order (the order results are paged
-- in; AUTOINCREMENT: an id is never given twice, even after the newest
-- message is deleted), and `search_text` indexes its current text. Contentless with
-- delete support: the text is in `messages` already, the index only needs
-- to forget a row when its message is edited or deleted.
--
-- Triggers keep both in the transaction of every append, edit and delete,
-- whichever code path makes it. Only messages are searchable: an edit
-- event's own row is not (the edited message is, by its new text).
CREATE TABLE IF NOT EXISTS search_keys (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    UNIQUE (room, seq)
);

-- remove_diacritics 0: "cafe" does not find "café", as in PostgreSQL's
-- 'simple' configuration; case still folds.
CREATE VIRTUAL TABLE IF NOT EXISTS search_text USING fts5(
    body,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 0'
);

INSERT INTO search_keys (room, seq)
SELECT room, seq FROM messages
WHERE kind = 'message' AND deleted = 0
ORDER BY ts_ms, room, seq;

INSERT INTO search_text (rowid, body)
SELECT k.id, m.body FROM search_keys k JOIN messages m ON m.room = k.room AND m.seq = k.seq;

CREATE TRIGGER IF NOT EXISTS search_on_insert AFTER INSERT ON messages
WHEN new.kind = 'message' AND new.deleted = 0
BEGIN
    INSERT INTO search_keys (room, seq) VALUES (new.room, new.seq);
    INSERT INTO search_text (rowid, body)
    SELECT id, new.body FROM search_keys WHERE room = new.room AND seq = new.seq;
END;

CREATE TRIGGER IF NOT EXISTS search_on_update AFTER UPDATE OF body, deleted ON messages
WHEN old.kind = 'message'
BEGIN
    DELETE FROM search_text
    WHERE rowid = (SELECT id FROM search_keys WHERE room = old.room AND seq = old.seq);
    INSERT INTO search_text (rowid, body)
    SELECT id, new.body FROM search_keys
    WHERE room = new.room AND seq = new.seq AND new.deleted = 0;
    DELETE FROM search_keys WHERE room = old.room AND seq = old.seq AND new.deleted <> 0;
END;

CREATE TRIGGER IF NOT EXISTS search_on_delete AFTER DELETE ON messages
WHEN old.kind = 'message'
BEGIN
    DELETE FROM search_text
    WHERE rowid = (SELECT id FROM search_keys WHERE room = old.room AND seq = old.seq);
    DELETE FROM search_keys WHERE room = old.room AND seq = old.seq;
END;
