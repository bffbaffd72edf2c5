-- Full-text search (protocol 1.1 §4). A generated column holds each
-- message's words under the 'simple' configuration (whole words, case
-- folded, no stemming and no stop words: it favours no language), and is
-- NULL for what is not searchable — events, and deleted messages. Being
-- generated, it changes in the statement that changes the message: an
-- append, an edit (body) or a delete (deleted, body) re-indexes in the
-- same transaction, whichever code path makes it.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS search tsvector
    GENERATED ALWAYS AS (
        CASE WHEN kind = 'message' AND NOT deleted
             THEN to_tsvector('simple'::regconfig, body)
        END
    ) STORED;

CREATE INDEX IF NOT EXISTS messages_search ON messages USING GIN (search);

-- A page is the newest matches. For a common word, walking this index
-- backwards and testing each row finds a page after a few rows; for a rare
-- one, the GIN index finds every match at once. The planner picks per
-- query (the store plans each search with its words: an unnamed statement)
-- from the column's statistics; the larger statistics target lets it tell
-- a word in 1% of the messages from one in 0.001%.
CREATE INDEX IF NOT EXISTS messages_search_order
    ON messages (ts_ms DESC, room DESC, seq DESC) WHERE search IS NOT NULL;

ALTER TABLE messages ALTER COLUMN search SET STATISTICS 1000;
ANALYZE messages;
