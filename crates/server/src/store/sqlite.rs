//! The embedded default store: SQLite in WAL mode.
//!
//! Writes go through one dedicated connection (SQLite has a single writer
//! anyway; a second writer would only meet `SQLITE_BUSY`), reads through a
//! small pool that WAL lets run beside the writer. `synchronous=FULL`: a
//! commit is on disk before it returns, so an ack survives a power cut; group
//! commit (see [`crate::commit`]) pays that fsync once per batch.
//!
//! A batch's write transaction (`BEGIN IMMEDIATE`) holds the whole database,
//! so the rules of its events (edits, deletes, membership and topic changes:
//! [`super::EventTx`]) are read and applied with nothing changing between;
//! a join that adds a member ([`Store::enter_room`]) writes the same way.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parley_protocol::Role;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use std::collections::HashMap;

use super::search::{self, SearchHit, SearchPage, SearchQuery};
use super::{
    Access, Account, AppendOutcome, AuthChanges, BanRow, EventColumns, EventKind, EventTx,
    LoginAttempt, MemberRow, NewMessage, REVOKED_TOKEN_KEEP_S, RoomListing, Store, StoreError,
    StoredMessage, Unread, append_event, apply_plan, auth_changes_of, by_room, classify,
    group_collisions, login_attempt_of, nonce_keys, plan_room, refuse_unstorable, runs,
    unread_rows, with_reactions,
};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_room_last_ts.sql"),
    ),
    (3, include_str!("../../migrations/sqlite/0003_accounts.sql")),
    (4, include_str!("../../migrations/sqlite/0004_events.sql")),
    (
        5,
        include_str!("../../migrations/sqlite/0005_read_state.sql"),
    ),
    (6, include_str!("../../migrations/sqlite/0006_search.sql")),
    (7, include_str!("../../migrations/sqlite/0007_members.sql")),
];

/// The columns [`row_to_message`] reads.
const EVENT_COLUMNS: &str = "seq, sender, body, ts_ms, nonce, kind, target, emoji, reaction_on, \
     reply_to, edited_ms, deleted, subject, member_change, role";

/// The columns of an [`Account`], for [`account_of`].
macro_rules! account_select {
    () => {
        "SELECT u.name, u.name_key, u.password_hash, u.role, u.disabled, u.created_ms, \
         COALESCE(r.tokens_after_s, 0) AS tokens_after_s \
         FROM users u LEFT JOIN user_revocations r ON r.user_key = u.name_key"
    };
}

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://FILE`) and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("bad SQLite URL {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(classify)?;
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.read_only(true))
            .await
            .map_err(classify)?;
        Ok(Self { writer, reader })
    }
}

impl SqliteStore {
    /// Adds the current reactions to the messages of a history page: one
    /// query per page, whatever its size.
    async fn fill_reactions(
        &self,
        room: &str,
        page: Vec<StoredMessage>,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let seqs: Vec<u64> = page
            .iter()
            .filter(|m| m.kind == EventKind::Message && !m.deleted)
            .map(|m| m.seq)
            .collect();
        let rows = reactions_of(&self.reader, room, &seqs).await?;
        Ok(with_reactions(page, rows))
    }
}

async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS parley_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)")
        .execute(pool)
        .await
        .map_err(classify)?;
    for (version, sql) in MIGRATIONS {
        let mut tx = pool.begin().await.map_err(classify)?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM parley_migrations WHERE version = ?1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
        if done.is_none() {
            sqlx::raw_sql(*sql)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            sqlx::query("INSERT INTO parley_migrations (version, applied_ms) VALUES (?1, ?2)")
                .bind(version)
                .bind(parley_protocol::time::now_ms())
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            tracing::info!(version, "applied SQLite migration");
        }
        tx.commit().await.map_err(classify)?;
    }
    Ok(())
}

fn row_to_message(room: &str, row: &sqlx::sqlite::SqliteRow) -> Result<StoredMessage, StoreError> {
    let seq: i64 = row.try_get("seq").map_err(classify)?;
    let reply_to: Option<i64> = row.try_get("reply_to").map_err(classify)?;
    Ok(StoredMessage {
        room: room.to_string(),
        seq: seq as u64,
        from: row.try_get("sender").map_err(classify)?,
        text: row.try_get("body").map_err(classify)?,
        ts_ms: row.try_get("ts_ms").map_err(classify)?,
        nonce: row.try_get("nonce").map_err(classify)?,
        kind: EventKind::from_columns(EventColumns {
            kind: row.try_get("kind").map_err(classify)?,
            target: row.try_get("target").map_err(classify)?,
            emoji: row.try_get("emoji").map_err(classify)?,
            reaction_on: row.try_get("reaction_on").map_err(classify)?,
            subject: row.try_get("subject").map_err(classify)?,
            member_change: row.try_get("member_change").map_err(classify)?,
            role: row.try_get("role").map_err(classify)?,
        })?,
        reply_to: reply_to.map(|r| r as u64),
        edited_ms: row.try_get("edited_ms").map_err(classify)?,
        deleted: row.try_get("deleted").map_err(classify)?,
        reactions: Default::default(),
    })
}

/// The current reactions of `seqs` in `room` (one query): (target, emoji,
/// username) in a stable order.
async fn reactions_of(
    reader: &SqlitePool,
    room: &str,
    seqs: &[u64],
) -> Result<Vec<(u64, String, String)>, StoreError> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let seqs = serde_json::to_string(seqs)
        .map_err(|e| StoreError::Internal(format!("seqs as JSON: {e}")))?;
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT target, emoji, username FROM reactions \
         WHERE room = ?1 AND on_state = 1 AND target IN (SELECT value FROM json_each(?2)) \
         ORDER BY target, emoji, user_key",
    )
    .bind(room)
    .bind(seqs)
    .fetch_all(reader)
    .await
    .map_err(classify)?;
    Ok(rows.into_iter().map(|(t, e, u)| (t as u64, e, u)).collect())
}

/// Clamps a u64 bound into SQLite's i64 range (seq never gets near it).
fn bound(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Rows per multi-row INSERT (6 parameters each; SQLite allows 32,766).
const INSERT_CHUNK: usize = 500;
/// Nonces looked up per query.
const LOOKUP_CHUNK: usize = 500;

/// Appends one room's share of a batch with a handful of statements — one
/// nonce lookup, one `last_seq` bump, one multi-row insert per chunk —
/// instead of two per message: each statement is a round trip to sqlx's
/// SQLite worker thread, and those round trips, not SQLite, bounded the
/// committer (docs/benchmarks.md).
///
/// `now_ms` is the commit's clock, read under the write lock. The room's
/// fresh messages are all stamped `max(now_ms, their own ts_ms, the room's
/// last_ts)`, and `last_ts` moves up to that stamp in the same statement
/// that bumps `last_seq`: ts never goes backwards along seq, even when the
/// node's clock does.
async fn append_room(
    tx: &mut Transaction<'_, Sqlite>,
    room: &str,
    batch: &[NewMessage],
    indices: &[usize],
    now_ms: i64,
    out: &mut [Option<AppendOutcome>],
) -> Result<(), StoreError> {
    let keys = nonce_keys(batch, indices);
    let mut stored = HashMap::new();
    for chunk in keys.chunks(LOOKUP_CHUNK) {
        let placeholders = vec!["?"; chunk.len()].join(",");
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM messages WHERE room = ? AND nonce IN ({placeholders})"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room);
        for (_, nonce) in chunk {
            query = query.bind(nonce);
        }
        for row in query.fetch_all(&mut **tx).await.map_err(classify)? {
            let m = row_to_message(room, &row)?;
            if let Some(n) = m.nonce.clone() {
                stored.insert((m.from.clone(), n), m);
            }
        }
    }
    let plan = plan_room(batch, indices, &stored);
    let n = plan.fresh.len() as i64;
    let mut first_seq = 0;
    let mut stamp = now_ms;
    if n > 0 {
        let clock = plan
            .fresh
            .iter()
            .map(|&i| batch[i].ts_ms)
            .fold(now_ms, i64::max);
        let (last, last_ts): (i64, i64) = sqlx::query_as(
            "INSERT INTO rooms (name, last_seq, created_ms, last_ts) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT (name) DO UPDATE SET last_seq = rooms.last_seq + excluded.last_seq, \
             last_ts = max(rooms.last_ts, excluded.last_ts) RETURNING last_seq, last_ts",
        )
        .bind(room)
        .bind(n)
        .bind(clock)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)?;
        first_seq = last - n + 1;
        stamp = last_ts;
        for (c, chunk) in plan.fresh.chunks(INSERT_CHUNK).enumerate() {
            let rows = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(",");
            let sql = format!(
                "INSERT INTO messages (room, seq, sender, body, ts_ms, nonce) VALUES {rows}"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (k, &i) in chunk.iter().enumerate() {
                let m = &batch[i];
                let seq = first_seq + (c * INSERT_CHUNK + k) as i64;
                query = query
                    .bind(room)
                    .bind(seq)
                    .bind(&m.from)
                    .bind(&m.text)
                    .bind(stamp)
                    .bind(&m.nonce);
            }
            query.execute(&mut **tx).await.map_err(classify)?;
        }
    }
    apply_plan(room, batch, plan, first_seq as u64, stamp, out);
    Ok(())
}

/// The statements of an event append ([`EventTx`]), in the batch's write
/// transaction; stamps come from the node's clock as for messages.
struct SqliteEvents<'a, 'c> {
    tx: &'a mut Transaction<'c, Sqlite>,
    now_ms: i64,
}

impl SqliteEvents<'_, '_> {
    async fn run(&mut self, sql: &'static str, room: &str, target: u64) -> Result<(), StoreError> {
        sqlx::query(sql)
            .bind(room)
            .bind(bound(target))
            .execute(&mut **self.tx)
            .await
            .map(drop)
            .map_err(classify)
    }

    /// Runs `sql` with (`room`, `user_key`) bound.
    async fn run_keyed(
        &mut self,
        sql: &'static str,
        room: &str,
        user_key: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(sql)
            .bind(room)
            .bind(user_key)
            .execute(&mut **self.tx)
            .await
            .map(drop)
            .map_err(classify)
    }
}

#[async_trait]
impl EventTx for SqliteEvents<'_, '_> {
    async fn by_nonce(
        &mut self,
        room: &str,
        from: &str,
        nonce: &str,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM messages WHERE room = ?1 AND nonce = ?2 AND sender = ?3"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room)
            .bind(nonce)
            .bind(from)
            .fetch_optional(&mut **self.tx)
            .await
            .map_err(classify)?;
        row.map(|row| row_to_message(room, &row)).transpose()
    }

    async fn by_seq(&mut self, room: &str, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM messages WHERE room = ?1 AND seq = ?2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room)
            .bind(bound(seq))
            .fetch_optional(&mut **self.tx)
            .await
            .map_err(classify)?;
        row.map(|row| row_to_message(room, &row)).transpose()
    }

    async fn reaction_state(
        &mut self,
        room: &str,
        target: u64,
        emoji: &str,
        user_key: &str,
    ) -> Result<Option<(bool, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT on_state, seq FROM reactions \
             WHERE room = ?1 AND target = ?2 AND emoji = ?3 AND user_key = ?4",
        )
        .bind(room)
        .bind(bound(target))
        .bind(emoji)
        .bind(user_key)
        .fetch_optional(&mut **self.tx)
        .await
        .map_err(classify)
    }

    async fn next_seq(&mut self, room: &str, accepted_ms: i64) -> Result<(u64, i64), StoreError> {
        let (seq, stamp): (i64, i64) = sqlx::query_as(
            "UPDATE rooms SET last_seq = last_seq + 1, last_ts = max(last_ts, ?2) \
             WHERE name = ?1 RETURNING last_seq, last_ts",
        )
        .bind(room)
        .bind(self.now_ms.max(accepted_ms))
        .fetch_optional(&mut **self.tx)
        .await
        .map_err(classify)?
        .ok_or_else(|| StoreError::Internal(format!("room {room:?} vanished")))?;
        Ok((seq as u64, stamp))
    }

    async fn insert(&mut self, event: &StoredMessage) -> Result<(), StoreError> {
        let (emoji, on) = event.reaction_columns();
        let (subject, change, role) = event.kind.member_columns();
        sqlx::query(
            "INSERT INTO messages (room, seq, sender, body, ts_ms, nonce, kind, target, emoji, \
             reaction_on, reply_to, subject, member_change, role) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .bind(&event.room)
        .bind(bound(event.seq))
        .bind(&event.from)
        .bind(&event.text)
        .bind(event.ts_ms)
        .bind(&event.nonce)
        .bind(event.kind.name())
        .bind(event.kind.target())
        .bind(emoji)
        .bind(on)
        .bind(event.reply_to.map(bound))
        .bind(subject)
        .bind(change)
        .bind(role)
        .execute(&mut **self.tx)
        .await
        .map(drop)
        .map_err(classify)
    }

    async fn set_text(
        &mut self,
        room: &str,
        target: u64,
        text: &str,
        ts_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE messages SET body = ?3, edited_ms = ?4 WHERE room = ?1 AND seq = ?2")
            .bind(room)
            .bind(bound(target))
            .bind(text)
            .bind(ts_ms)
            .execute(&mut **self.tx)
            .await
            .map(drop)
            .map_err(classify)
    }

    async fn set_deleted(&mut self, room: &str, target: u64) -> Result<(), StoreError> {
        self.run(
            "UPDATE messages SET body = '', deleted = 1 WHERE room = ?1 AND seq = ?2",
            room,
            target,
        )
        .await?;
        self.run(
            "UPDATE messages SET body = '' WHERE room = ?1 AND kind = 'edited' AND target = ?2",
            room,
            target,
        )
        .await?;
        self.run(
            "DELETE FROM reactions WHERE room = ?1 AND target = ?2",
            room,
            target,
        )
        .await
    }

    async fn set_reaction(
        &mut self,
        room: &str,
        target: u64,
        emoji: &str,
        user: &str,
        on: bool,
        seq: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reactions (room, target, emoji, user_key, username, on_state, seq) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (room, target, emoji, user_key) DO UPDATE \
             SET on_state = excluded.on_state, seq = excluded.seq, username = excluded.username",
        )
        .bind(room)
        .bind(bound(target))
        .bind(emoji)
        .bind(parley_protocol::fold_username(user))
        .bind(user)
        .bind(on)
        .bind(bound(seq))
        .execute(&mut **self.tx)
        .await
        .map(drop)
        .map_err(classify)
    }

    async fn owners(&mut self, room: &str) -> Result<Option<u64>, StoreError> {
        let owners: Option<i64> = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM members m WHERE m.room = r.name AND m.role = 'owner') \
             FROM rooms r WHERE r.name = ?1",
        )
        .bind(room)
        .fetch_optional(&mut **self.tx)
        .await
        .map_err(classify)?;
        Ok(owners.map(|n| n.max(0) as u64))
    }

    async fn member_state(
        &mut self,
        room: &str,
        user_key: &str,
    ) -> Result<(Option<Role>, bool), StoreError> {
        let (role, banned): (Option<String>, bool) = sqlx::query_as(
            "SELECT (SELECT role FROM members WHERE room = ?1 AND user_key = ?2), \
                    EXISTS (SELECT 1 FROM bans WHERE room = ?1 AND user_key = ?2)",
        )
        .bind(room)
        .bind(user_key)
        .fetch_one(&mut **self.tx)
        .await
        .map_err(classify)?;
        Ok((super::role_of(role)?, banned))
    }

    async fn set_member(
        &mut self,
        room: &str,
        user: &str,
        role: Role,
        since_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO members (room, user_key, username, role, since_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (room, user_key) DO UPDATE SET role = excluded.role",
        )
        .bind(room)
        .bind(parley_protocol::fold_username(user))
        .bind(user)
        .bind(role.as_str())
        .bind(since_ms)
        .execute(&mut **self.tx)
        .await
        .map(drop)
        .map_err(classify)
    }

    async fn remove_member(&mut self, room: &str, user_key: &str) -> Result<(), StoreError> {
        self.run_keyed(
            "DELETE FROM members WHERE room = ?1 AND user_key = ?2",
            room,
            user_key,
        )
        .await
    }

    async fn set_ban(
        &mut self,
        room: &str,
        user: &str,
        by: &str,
        reason: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO bans (room, user_key, username, by_user, reason, at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (room, user_key) DO UPDATE SET username = excluded.username, \
             by_user = excluded.by_user, reason = excluded.reason, at_ms = excluded.at_ms",
        )
        .bind(room)
        .bind(parley_protocol::fold_username(user))
        .bind(user)
        .bind(by)
        .bind(reason)
        .bind(at_ms)
        .execute(&mut **self.tx)
        .await
        .map(drop)
        .map_err(classify)
    }

    async fn remove_ban(&mut self, room: &str, user_key: &str) -> Result<(), StoreError> {
        self.run_keyed(
            "DELETE FROM bans WHERE room = ?1 AND user_key = ?2",
            room,
            user_key,
        )
        .await
    }

    async fn set_topic(&mut self, room: &str, topic: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE rooms SET topic = ?2 WHERE name = ?1")
            .bind(room)
            .bind(topic)
            .execute(&mut **self.tx)
            .await
            .map(drop)
            .map_err(classify)
    }
}

/// [`Store::access`]: the room joined with the user's membership and ban,
/// one query.
async fn access_of<'e>(
    db: impl sqlx::SqliteExecutor<'e>,
    room: &str,
    user_key: &str,
) -> Result<Access, StoreError> {
    let row: Option<(bool, String, Option<String>, bool)> = sqlx::query_as(
        "SELECT r.private, r.topic, m.role, b.user_key IS NOT NULL FROM rooms r \
         LEFT JOIN members m ON m.room = r.name AND m.user_key = ?2 \
         LEFT JOIN bans b ON b.room = r.name AND b.user_key = ?2 \
         WHERE r.name = ?1",
    )
    .bind(room)
    .bind(user_key)
    .fetch_optional(db)
    .await
    .map_err(classify)?;
    let Some((private, topic, role, banned)) = row else {
        return Ok(Access::default());
    };
    Ok(Access {
        exists: true,
        private,
        topic,
        role: super::role_of(role)?,
        banned,
    })
}

/// Inserts `room` and its owner `owner` in `tx`; `false` (nothing written)
/// if the room exists.
async fn insert_room(
    tx: &mut Transaction<'_, Sqlite>,
    room: &str,
    owner: &str,
    private: bool,
    topic: &str,
) -> Result<bool, StoreError> {
    let now = parley_protocol::time::now_ms();
    let created = sqlx::query(
        "INSERT INTO rooms (name, last_seq, created_ms, private, topic) VALUES (?1, 0, ?2, ?3, ?4) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(room)
    .bind(now)
    .bind(private)
    .bind(topic)
    .execute(&mut **tx)
    .await
    .map_err(classify)?
    .rows_affected()
        > 0;
    if created {
        sqlx::query(
            "INSERT INTO members (room, user_key, username, role, since_ms) \
             VALUES (?1, ?2, ?3, 'owner', ?4) \
             ON CONFLICT (room, user_key) DO UPDATE SET role = 'owner'",
        )
        .bind(room)
        .bind(parley_protocol::fold_username(owner))
        .bind(owner)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    }
    Ok(created)
}

#[async_trait]
impl Store for SqliteStore {
    async fn append_batch(&self, batch: &[NewMessage]) -> Result<Vec<AppendOutcome>, StoreError> {
        refuse_unstorable(batch)?;
        let mut out: Vec<Option<AppendOutcome>> = vec![None; batch.len()];
        // IMMEDIATE: take the write lock up front. A deferred transaction
        // that reads (the nonce check) and then writes fails at once with
        // SQLITE_BUSY if another connection wrote in between — the busy
        // timeout does not apply to that upgrade.
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        // The stamp's clock, read under the write lock.
        let now_ms = parley_protocol::time::now_ms();
        for (room, indices) in &by_room(batch) {
            // Plain messages in runs (a handful of statements per run);
            // events one by one, in between, so that seq order stays
            // submission order and each event sees the ones before it.
            for run in runs(batch, indices) {
                match run {
                    Ok(plain) => append_room(&mut tx, room, batch, plain, now_ms, &mut out).await?,
                    Err(i) => {
                        let mut events = SqliteEvents {
                            tx: &mut tx,
                            now_ms,
                        };
                        out[i] = Some(append_event(&mut events, room, &batch[i]).await?);
                    }
                }
            }
        }
        tx.commit().await.map_err(classify)?;
        out.into_iter()
            .map(|o| o.ok_or_else(|| StoreError::Internal("append outcome missing".into())))
            .collect()
    }

    async fn ensure_room(&self, room: &str) -> Result<u64, StoreError> {
        // The reader pool first: the single writer connection is the group
        // committer's, and a join must not queue behind a batch of appends.
        if let Some(seq) = self.last_seq(room).await? {
            return Ok(seq);
        }
        sqlx::query("INSERT INTO rooms (name, last_seq, created_ms) VALUES (?1, 0, ?2) ON CONFLICT (name) DO NOTHING")
            .bind(room)
            .bind(parley_protocol::time::now_ms())
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        let seq: i64 = sqlx::query_scalar("SELECT last_seq FROM rooms WHERE name = ?1")
            .bind(room)
            .fetch_one(&self.writer)
            .await
            .map_err(classify)?;
        Ok(seq as u64)
    }

    async fn last_seq(&self, room: &str) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM rooms WHERE name = ?1")
            .bind(room)
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        Ok(seq.map(|s| s as u64))
    }

    async fn create_room(
        &self,
        room: &str,
        owner: &str,
        private: bool,
        topic: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        if !insert_room(&mut tx, room, owner, private, topic).await? {
            return Err(StoreError::Conflict(format!("room {room:?} exists")));
        }
        tx.commit().await.map_err(classify)
    }

    async fn access(&self, room: &str, user_key: &str) -> Result<Access, StoreError> {
        access_of(&self.reader, room, user_key).await
    }

    async fn enter_room(&self, room: &str, user: &str) -> Result<Access, StoreError> {
        let key = parley_protocol::fold_username(user);
        // The reader pool first: a member's join (every join but the
        // first) writes nothing, and must not queue behind the committer.
        let seen = access_of(&self.reader, room, &key).await?;
        if seen.exists && (seen.role.is_some() || seen.private || seen.banned) {
            return Ok(seen);
        }
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        if !insert_room(&mut tx, room, user, false, "").await? {
            sqlx::query(
                "INSERT INTO members (room, user_key, username, role, since_ms) \
                 SELECT r.name, ?2, ?3, 'member', ?4 FROM rooms r \
                 WHERE r.name = ?1 AND r.private = 0 \
                   AND NOT EXISTS (SELECT 1 FROM bans b WHERE b.room = r.name AND b.user_key = ?2) \
                 ON CONFLICT (room, user_key) DO NOTHING",
            )
            .bind(room)
            .bind(&key)
            .bind(user)
            .bind(parley_protocol::time::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        let access = access_of(&mut *tx, room, &key).await?;
        tx.commit().await.map_err(classify)?;
        Ok(access)
    }

    async fn members(&self, room: &str) -> Result<Vec<MemberRow>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT username, role, since_ms FROM members WHERE room = ?1 \
             ORDER BY CASE role WHEN 'owner' THEN 0 WHEN 'moderator' THEN 1 ELSE 2 END, \
                      lower(username), username",
        )
        .bind(room)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(user, role, since_ms)| {
                Ok(MemberRow {
                    role: super::role_of(Some(role))?.unwrap_or(Role::Member),
                    user,
                    since_ms,
                })
            })
            .collect()
    }

    async fn bans(&self, room: &str) -> Result<Vec<BanRow>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT username, by_user, reason, at_ms FROM bans WHERE room = ?1 \
             ORDER BY lower(username), username",
        )
        .bind(room)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|(user, by, reason, at_ms)| BanRow {
                user,
                by,
                reason,
                at_ms,
            })
            .collect())
    }

    async fn room_list(&self, user_key: &str, all: bool) -> Result<Vec<RoomListing>, StoreError> {
        let rows: Vec<(String, i64, bool, String, Option<String>)> = sqlx::query_as(
            "SELECT r.name, r.last_seq, r.private, r.topic, m.role FROM rooms r \
             LEFT JOIN members m ON m.room = r.name AND m.user_key = ?1 \
             WHERE (r.private = 0 OR substr(r.name, 1, 3) = 'dm:' OR m.role IS NOT NULL OR ?2) \
               AND (?2 OR NOT EXISTS (SELECT 1 FROM bans b WHERE b.room = r.name AND b.user_key = ?1)) \
             ORDER BY r.name",
        )
        .bind(user_key)
        .bind(all)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(room, last_seq, private, topic, role)| {
                Ok(RoomListing {
                    room,
                    last_seq: last_seq as u64,
                    private,
                    topic,
                    role: super::role_of(role)?,
                })
            })
            .collect()
    }

    async fn last_seqs(&self, rooms: &[Arc<str>]) -> Result<Vec<(String, u64)>, StoreError> {
        let names: Vec<&str> = rooms.iter().map(|r| &**r).collect();
        let names = serde_json::to_string(&names)
            .map_err(|e| StoreError::Internal(format!("room names as JSON: {e}")))?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, last_seq FROM rooms WHERE name IN (SELECT value FROM json_each(?1))",
        )
        .bind(names)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(|(n, s)| (n, s as u64)).collect())
    }

    async fn rooms(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT name, last_seq FROM rooms ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.try_get("last_seq").map_err(classify)?;
                Ok((r.try_get("name").map_err(classify)?, seq as u64))
            })
            .collect()
    }

    async fn range_forward(
        &self,
        room: &str,
        after: u64,
        before: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM messages \
             WHERE room = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq ASC LIMIT ?4"
        )))
        .bind(room)
        .bind(bound(after))
        .bind(bound(before))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let page = rows
            .iter()
            .map(|r| row_to_message(room, r))
            .collect::<Result<Vec<_>, _>>()?;
        self.fill_reactions(room, page).await
    }

    async fn range_backward(
        &self,
        room: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM messages \
             WHERE room = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
        )))
        .bind(room)
        .bind(bound(before))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let mut page = rows
            .iter()
            .map(|r| row_to_message(room, r))
            .collect::<Result<Vec<_>, _>>()?;
        page.reverse();
        self.fill_reactions(room, page).await
    }

    async fn mark_read(
        &self,
        user_key: &str,
        room: &str,
        seq: u64,
    ) -> Result<Option<u64>, StoreError> {
        let Some(last) = self.last_seq(room).await? else {
            return Ok(None);
        };
        let stored: i64 = sqlx::query_scalar(
            "INSERT INTO read_state (user_key, room, seq) VALUES (?1, ?2, ?3) \
             ON CONFLICT (user_key, room) DO UPDATE \
             SET seq = max(read_state.seq, excluded.seq) RETURNING seq",
        )
        .bind(user_key)
        .bind(room)
        .bind(bound(seq.min(last)))
        .fetch_one(&self.writer)
        .await
        .map_err(classify)?;
        Ok(Some(stored as u64))
    }

    async fn read_positions(&self, user_key: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT room, seq FROM read_state WHERE user_key = ?1 ORDER BY room")
                .bind(user_key)
                .fetch_all(&self.reader)
                .await
                .map_err(classify)?;
        Ok(rows.into_iter().map(|(r, s)| (r, s as u64)).collect())
    }

    async fn search(&self, query: &SearchQuery<'_>) -> Result<SearchPage, StoreError> {
        let Some(terms) = search::fts5_match(query.q) else {
            return Ok(SearchPage::default());
        };
        let before = query
            .before
            .map(search::parse_rowid_cursor)
            .transpose()?
            .unwrap_or(i64::MAX);
        let (dm_prefix, dm_suffix) = search::dm_bounds(query.user_key);
        // FTS5 walks the matches in rowid order from `before` down, and
        // stops once a page is found: a page costs the rows it skips, not
        // every match. Rooms the caller may not read (private ones it is
        // not a member of, those that banned it: not for a server admin)
        // are left out here, so that a page is full whenever there is more
        // to find; each test is a key lookup in a small table.
        let rows: Vec<(i64, String, i64, String, String, i64)> = sqlx::query_as(
            "SELECT k.id, k.room, k.seq, m.sender, m.body, m.ts_ms \
             FROM search_text f \
             JOIN search_keys k ON k.id = f.rowid \
             JOIN messages m ON m.room = k.room AND m.seq = k.seq \
             WHERE search_text MATCH ?1 AND f.rowid < ?2 \
               AND (?3 IS NULL OR k.room = ?3) \
               AND (substr(k.room, 1, 3) <> 'dm:' \
                    OR substr(k.room, 1, length(?4)) = ?4 \
                    OR substr(k.room, -length(?5)) = ?5) \
               AND (?7 OR (\
                    NOT EXISTS (SELECT 1 FROM bans b WHERE b.room = k.room AND b.user_key = ?8) \
                    AND NOT EXISTS (SELECT 1 FROM rooms r WHERE r.name = k.room AND r.private <> 0 \
                        AND NOT EXISTS (SELECT 1 FROM members mm \
                                        WHERE mm.room = r.name AND mm.user_key = ?8)))) \
             ORDER BY f.rowid DESC LIMIT ?6",
        )
        .bind(terms)
        .bind(before)
        .bind(query.room)
        .bind(dm_prefix)
        .bind(dm_suffix)
        .bind(i64::from(query.limit) + 1)
        .bind(query.admin)
        .bind(query.user_key)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(search::page_of(
            rows,
            query,
            |r| search::rowid_cursor(r.0),
            |(_, room, seq, from, text, ts_ms)| SearchHit::from((room, seq, from, text, ts_ms)),
        ))
    }

    async fn unread(&self, user_key: &str, room: &str) -> Result<Unread, StoreError> {
        let read_seq: i64 =
            sqlx::query_scalar("SELECT seq FROM read_state WHERE user_key = ?1 AND room = ?2")
                .bind(user_key)
                .bind(room)
                .fetch_optional(&self.reader)
                .await
                .map_err(classify)?
                .unwrap_or(0);
        // The same capped range as a room list's, for one room.
        let mut one = self
            .unread_many(user_key, &[(room.to_string(), read_seq.max(0) as u64)])
            .await?;
        one.pop()
            .ok_or_else(|| StoreError::Internal("unread of a room answered no row".into()))
    }

    async fn unread_many(
        &self,
        user_key: &str,
        rooms: &[(String, u64)],
    ) -> Result<Vec<Unread>, StoreError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        // The rooms travel as one JSON array of [room, read_seq]. Per room,
        // the same capped range of the key as `unread`, read once: its
        // count and the bodies that may mention the user, as `[n, [...]]`.
        let wanted =
            serde_json::to_string(rooms).map_err(|e| StoreError::Internal(e.to_string()))?;
        let rows: Vec<(String,)> = sqlx::query_as(
            "WITH wanted(i, room, read_seq) AS ( \
               SELECT key, json_extract(value, '$[0]'), json_extract(value, '$[1]') \
               FROM json_each(?1)) \
             SELECT (SELECT json_array(count(*), \
                       json_group_array(body) FILTER (WHERE instr(lower(body), ?4) > 0)) \
                     FROM (SELECT body FROM messages \
                           WHERE room = w.room AND seq > w.read_seq AND kind = 'message' \
                             AND deleted = 0 AND lower(sender) <> ?2 \
                           ORDER BY seq DESC LIMIT ?3)) \
             FROM wanted w ORDER BY w.i",
        )
        .bind(wanted)
        .bind(user_key)
        .bind(parley_protocol::UNREAD_CAP as i64)
        .bind(format!("@{user_key}"))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let rows = rows
            .into_iter()
            .map(|(json,)| {
                serde_json::from_str::<(i64, Vec<String>)>(&json)
                    .map_err(|e| StoreError::Internal(format!("unread of a room: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        unread_rows(user_key, rooms, rows)
    }

    async fn create_user(&self, name: &str, password_hash: &str) -> Result<(), StoreError> {
        let now = parley_protocol::time::now_ms();
        sqlx::query(
            "INSERT INTO users (name, password_hash, created_ms, name_key, changed_ms) \
             VALUES (?1, ?2, ?3, ?4, ?3)",
        )
        .bind(name)
        .bind(password_hash)
        .bind(now)
        .bind(parley_protocol::fold_username(name))
        .execute(&self.writer)
        .await
        .map_err(|e| match classify(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("username {name:?} is taken")),
            other => other,
        })?;
        Ok(())
    }

    async fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT password_hash FROM users WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?1")
            .bind(key)
            .fetch_one(&self.writer)
            .await
            .map_err(classify)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn account(&self, key: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(concat!(account_select!(), " WHERE u.name_key = ?1"))
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        row.as_ref().map(account_of).transpose()
    }

    async fn find_account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(concat!(
            account_select!(),
            " WHERE u.name = ?1 OR u.name_key = ?2 ORDER BY u.name = ?1 DESC LIMIT 1"
        ))
        .bind(name)
        .bind(parley_protocol::fold_username(name))
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)?;
        row.as_ref().map(account_of).transpose()
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query(concat!(account_select!(), " ORDER BY u.name"))
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.iter().map(account_of).collect()
    }

    async fn set_password(
        &self,
        name: &str,
        password_hash: &str,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        let key: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE users SET password_hash = ?2 WHERE name = ?1 RETURNING name_key",
        )
        .bind(name)
        .bind(password_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let Some(key) = key else {
            return Ok(None);
        };
        let after = match key {
            Some(key) => revoke_user(&mut tx, &key).await?,
            None => 0,
        };
        tx.commit().await.map_err(classify)?;
        Ok(Some(after))
    }

    async fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        let now = parley_protocol::time::now_ms();
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        let key: Option<Option<String>> =
            sqlx::query_scalar("SELECT name_key FROM users WHERE name = ?1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
        let Some(key) = key else {
            return Ok(false);
        };
        if disabled {
            if let Some(key) = &key {
                revoke_user(&mut tx, key).await?;
            }
        } else if key.is_none() {
            // An account of an older version that lost its name to another
            // spelling: it gets it back only if no other one holds it.
            let holders: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM users WHERE lower(name) = lower(?1) AND name <> ?1 \
                 AND (disabled = 0 OR name_key IS NOT NULL)",
            )
            .bind(name)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
            if !holders.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "the name {name:?} is {}'s (names are unique case-insensitively); \
                     disable that account first",
                    holders.join(", ")
                )));
            }
            sqlx::query("UPDATE users SET name_key = lower(name) WHERE name = ?1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        sqlx::query("UPDATE users SET disabled = ?2, changed_ms = ?3 WHERE name = ?1")
            .bind(name)
            .bind(disabled)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(true)
    }

    async fn set_role(&self, name: &str, role: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET role = ?2 WHERE name = ?1")
            .bind(name)
            .bind(role)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn name_collisions(&self) -> Result<Vec<Vec<String>>, StoreError> {
        let unkeyed: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM users WHERE name_key IS NULL AND disabled = 0 LIMIT 1",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)?;
        if unkeyed.is_none() {
            return Ok(Vec::new());
        }
        sqlx::query(
            "UPDATE users SET name_key = lower(name), changed_ms = ?1 \
             WHERE name_key IS NULL AND disabled = 0 AND NOT EXISTS ( \
                 SELECT 1 FROM users o WHERE lower(o.name) = lower(users.name) \
                 AND o.name <> users.name AND (o.disabled = 0 OR o.name_key IS NOT NULL))",
        )
        .bind(parley_protocol::time::now_ms())
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM users WHERE lower(name) IN \
             (SELECT lower(name) FROM users WHERE name_key IS NULL AND disabled = 0)",
        )
        .fetch_all(&self.writer)
        .await
        .map_err(classify)?;
        Ok(group_collisions(names))
    }

    async fn stray_dm_rooms(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT name FROM rooms WHERE substr(name, 1, 3) = 'dm:' AND name <> lower(name) \
             ORDER BY name",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(classify)
    }

    async fn revoke_token(
        &self,
        token_id: &str,
        user_key: &str,
        exp_s: i64,
    ) -> Result<(), StoreError> {
        let now = parley_protocol::time::now_ms();
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        sqlx::query(
            "INSERT INTO revoked_tokens (token_id, user_key, exp_s, revoked_ms) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (token_id) DO NOTHING",
        )
        .bind(token_id)
        .bind(user_key)
        .bind(exp_s)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query("DELETE FROM revoked_tokens WHERE exp_s < ?1")
            .bind(now / 1000 - REVOKED_TOKEN_KEEP_S)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    async fn revoke_user_tokens(&self, user_key: &str) -> Result<i64, StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        let after = revoke_user(&mut tx, user_key).await?;
        tx.commit().await.map_err(classify)?;
        Ok(after)
    }

    async fn auth_changes(&self, since_ms: Option<i64>) -> Result<AuthChanges, StoreError> {
        let now_ms = parley_protocol::time::now_ms();
        let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT 'a', name_key, name, disabled FROM users \
               WHERE name_key IS NOT NULL AND changed_ms >= ?1 \
                 AND (?2 OR name <> name_key OR disabled <> 0) \
             UNION ALL SELECT 'r', user_key, NULL, tokens_after_s FROM user_revocations \
               WHERE changed_ms >= ?1 \
             UNION ALL SELECT 't', token_id, NULL, exp_s FROM revoked_tokens \
               WHERE revoked_ms >= ?1 AND exp_s >= ?3",
        )
        .bind(since_ms.unwrap_or(i64::MIN))
        .bind(since_ms.is_some())
        .bind(now_ms / 1000 - REVOKED_TOKEN_KEEP_S)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(auth_changes_of(now_ms, rows))
    }

    async fn login_attempt(
        &self,
        user_key: &str,
        addr: &str,
        at_ms: i64,
        since_ms: i64,
    ) -> Result<LoginAttempt, StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE at_ms < ?1")
            .bind(since_ms)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO login_failures (user_key, addr, at_ms) VALUES (?1, ?2, ?3) RETURNING id",
        )
        .bind(user_key)
        .bind(addr)
        .bind(at_ms)
        .fetch_one(&self.writer)
        .await
        .map_err(classify)?;
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT user_key, addr, at_ms FROM login_failures \
             WHERE (user_key = ?1 OR addr = ?2) AND at_ms >= ?3 AND id <> ?4 ORDER BY at_ms, id",
        )
        .bind(user_key)
        .bind(addr)
        .bind(since_ms)
        .bind(id)
        .fetch_all(&self.writer)
        .await
        .map_err(classify)?;
        Ok(login_attempt_of(id, user_key, addr, rows))
    }

    async fn forget_login_attempt(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE id = ?1")
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn clear_login_failures(&self, user_key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE user_key = ?1")
            .bind(user_key)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(())
    }
}

fn account_of(row: &sqlx::sqlite::SqliteRow) -> Result<Account, StoreError> {
    let disabled: i64 = row.try_get("disabled").map_err(classify)?;
    Ok(Account {
        name: row.try_get("name").map_err(classify)?,
        key: row.try_get("name_key").map_err(classify)?,
        password_hash: row.try_get("password_hash").map_err(classify)?,
        role: row.try_get("role").map_err(classify)?,
        disabled: disabled != 0,
        created_ms: row.try_get("created_ms").map_err(classify)?,
        tokens_after_s: row.try_get("tokens_after_s").map_err(classify)?,
    })
}

/// Revokes every token of `key` issued so far; returns `tokens_after_s`.
async fn revoke_user(tx: &mut Transaction<'_, Sqlite>, key: &str) -> Result<i64, StoreError> {
    let now = parley_protocol::time::now_ms();
    sqlx::query_scalar(
        "INSERT INTO user_revocations (user_key, tokens_after_s, changed_ms) VALUES (?1, ?2, ?3) \
         ON CONFLICT (user_key) DO UPDATE SET \
           tokens_after_s = max(user_revocations.tokens_after_s + 1, excluded.tokens_after_s), \
           changed_ms = excluded.changed_ms \
         RETURNING tokens_after_s",
    )
    .bind(key)
    .bind(now.div_euclid(1000) + 1)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(classify)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store made by an older Parley (schema 1) gets each room's
    /// `last_ts` from its messages — their newest ts, not the last one's —
    /// and the first append after the upgrade is stamped no earlier.
    #[tokio::test]
    async fn upgrade_backfills_last_ts() {
        let dir = tempfile::TempDir::new().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let ahead = parley_protocol::time::now_ms() + 3_600_000;
        {
            let options = SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true);
            let old = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            sqlx::raw_sql(MIGRATIONS[0].1).execute(&old).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE parley_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL);
                 INSERT INTO parley_migrations VALUES (1, 0);
                 INSERT INTO rooms (name, last_seq, created_ms) VALUES ('old', 2, 0), ('empty', 0, 0);
                 INSERT INTO messages (room, seq, sender, body, ts_ms) VALUES
                     ('old', 1, 'a', 'x', {ahead}), ('old', 2, 'a', 'y', {});",
                ahead - 5
            )))
            .execute(&old)
            .await
            .unwrap();
            old.close().await;
        }
        let store = SqliteStore::open(&url).await.unwrap();
        let last_ts: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, last_ts FROM rooms ORDER BY name")
                .fetch_all(&store.reader)
                .await
                .unwrap();
        assert_eq!(
            last_ts,
            vec![("empty".to_string(), 0), ("old".to_string(), ahead)]
        );
        let out = store
            .append_batch(&[NewMessage {
                room: "old".into(),
                from: "b".into(),
                text: "after the upgrade".into(),
                nonce: None,
                ts_ms: parley_protocol::time::now_ms(),
                ..Default::default()
            }])
            .await
            .unwrap();
        assert_eq!(out[0].message().unwrap().seq, 3);
        assert_eq!(out[0].message().unwrap().ts_ms, ahead);
    }
}
