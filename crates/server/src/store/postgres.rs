//! The fleet store: PostgreSQL, shared by every node.
//!
//! Gapless `seq` with several writers (invariant 2): a batch is one call of
//! the `parley_append` function (migrations/postgres/0002, replaced by 0003),
//! which locks the batch's rooms in name order — so two nodes' batches can
//! never deadlock — then numbers the new messages from each room's
//! `last_seq`, stamps their `ts` with the database server's clock (never
//! below the room's `last_ts`: one clock for the fleet, non-decreasing along
//! seq) and inserts them. Another node's batch for the same room waits for
//! the lock and continues from the committed value. One statement per batch:
//! one round trip and one implicit transaction, whatever the number of rooms.
//! A batch that holds events (edits, deletes, reactions, membership and
//! topic changes) is a transaction that locks its rooms the same way and
//! checks each event's rules with them held ([`super::EventTx`]), so the
//! members and bans it reads cannot change under it; a join that adds a
//! member ([`Store::enter_room`]) takes a share lock on the room row to
//! stay out of its way. `synchronous_commit` stays the server's (on): a
//! commit is durable.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parley_protocol::Role;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::search::{self, HitRow, SearchHit, SearchPage, SearchQuery};
use super::{
    Access, Account, AppendOutcome, AuthChanges, BanRow, Change, EventColumns, EventKind, EventTx,
    LoginAttempt, MemberRow, NewMessage, REVOKED_TOKEN_KEEP_S, RoomListing, Store, StoreError,
    StoredMessage, Unread, append_event, auth_changes_of, by_room, classify, event_of,
    group_collisions, login_attempt_of, refuse_unstorable, runs, unread_rows, with_reactions,
};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_append_function.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_room_last_ts.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_accounts.sql"),
    ),
    (5, include_str!("../../migrations/postgres/0005_events.sql")),
    (
        6,
        include_str!("../../migrations/postgres/0006_read_state.sql"),
    ),
    (7, include_str!("../../migrations/postgres/0007_search.sql")),
    (
        8,
        include_str!("../../migrations/postgres/0008_members.sql"),
    ),
];

/// The columns [`row_to_message`] reads.
const EVENT_COLUMNS: &str = "seq, sender, body, ts_ms, nonce, kind, target, emoji, reaction_on, \
     reply_to, edited_ms, deleted, subject, member_change, role";
/// The database's clock in milliseconds since the epoch: what accounts'
/// `changed_ms` and revocations' times are written with, so that every node
/// compares them with one clock ([`Store::auth_changes`]).
macro_rules! now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::int8"
    };
}

/// The columns of an [`Account`], for [`account_of`].
macro_rules! account_select {
    () => {
        "SELECT u.name, u.name_key, u.password_hash, u.role, u.disabled, u.created_ms, \
         COALESCE(r.tokens_after_s, 0) AS tokens_after_s \
         FROM users u LEFT JOIN user_revocations r ON r.user_key = u.name_key"
    };
}

/// Serialises migrations of nodes that start at the same time.
const MIGRATION_LOCK: i64 = 0x7061_726c_6579;

pub struct PgStore {
    pool: PgPool,
    /// Follows the writable server of a several-host URL (a failover).
    hosts: Option<super::pg_hosts::HostWatch>,
}

impl PgStore {
    /// Opens the pool on the (first writable) server of `url`, which may
    /// name several hosts in libpq's syntax ([`super::pg_hosts`]).
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(3));
        let (pool, hosts) = super::pg_hosts::connect(url, options).await?;
        check_encoding(&pool).await?;
        migrate(&pool).await?;
        Ok(Self { pool, hosts })
    }

    /// [`Store::append_batch`] on the pool's current host.
    async fn append_batch_here(
        &self,
        batch: &[NewMessage],
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // PostgreSQL would fail the statement on U+0000; refuse it the way
        // SQLite does, before the round trip.
        refuse_unstorable(batch)?;
        let mut out: Vec<Option<AppendOutcome>> = vec![None; batch.len()];
        if batch.iter().all(|m| m.change == Change::Message) {
            let all: Vec<usize> = (0..batch.len()).collect();
            append_plain(&self.pool, batch, &all, &mut out).await?;
        } else {
            let mut tx = self.pool.begin().await.map_err(classify)?;
            let rooms: Vec<&str> = by_room(batch).into_keys().collect();
            let new_rooms: Vec<&str> = batch
                .iter()
                .filter(|m| m.change == Change::Message)
                .map(|m| m.room.as_str())
                .collect();
            sqlx::query(concat!(
                "INSERT INTO rooms (name, last_seq, created_ms) \
                 SELECT DISTINCT r, 0, ",
                now_ms!(),
                " FROM unnest($1::text[]) AS r ORDER BY r ON CONFLICT (name) DO NOTHING"
            ))
            .bind(&new_rooms)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            sqlx::query("SELECT 1 FROM rooms WHERE name = ANY($1) ORDER BY name FOR UPDATE")
                .bind(&rooms)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            for (room, indices) in &by_room(batch) {
                for run in runs(batch, indices) {
                    match run {
                        Ok(plain) => append_plain(&mut *tx, batch, plain, &mut out).await?,
                        Err(i) => {
                            let mut events = PgEvents { tx: &mut tx };
                            out[i] = Some(append_event(&mut events, room, &batch[i]).await?);
                        }
                    }
                }
            }
            tx.commit().await.map_err(classify)?;
        }
        out.into_iter()
            .map(|o| o.ok_or_else(|| StoreError::Internal("append outcome missing".into())))
            .collect()
    }
}

impl PgStore {
    /// Adds the current reactions to the messages of a history page: one
    /// query per page, whatever its size.
    async fn fill_reactions(
        &self,
        room: &str,
        page: Vec<StoredMessage>,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let seqs: Vec<i64> = page
            .iter()
            .filter(|m| m.kind == EventKind::Message && !m.deleted)
            .map(|m| m.seq as i64)
            .collect();
        if seqs.is_empty() {
            return Ok(page);
        }
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT target, emoji, username FROM reactions \
             WHERE room = $1 AND on_state AND target = ANY($2) ORDER BY target, emoji, user_key",
        )
        .bind(room)
        .bind(&seqs)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        let rows = rows.into_iter().map(|(t, e, u)| (t as u64, e, u)).collect();
        Ok(with_reactions(page, rows))
    }
}

/// Warns when the database cannot hold every character a message may hold.
/// In a UTF8 database `TEXT` refuses only U+0000, which the node refuses
/// first (`parley_protocol::text`); in one with another server encoding
/// (LATIN1, WIN1252, …) every character outside it fails its message
/// (`untranslatable character`) — and in some (LATIN1) the migrations
/// themselves, so the warning comes first. SQL_ASCII stores the bytes as
/// sent.
async fn check_encoding(pool: &PgPool) -> Result<(), StoreError> {
    let encoding: String = sqlx::query_scalar("SHOW server_encoding")
        .fetch_one(pool)
        .await
        .map_err(classify)?;
    if !matches!(encoding.as_str(), "UTF8" | "SQL_ASCII") {
        tracing::warn!(
            %encoding,
            "the PostgreSQL database is not UTF8: messages with characters outside its encoding \
             will be refused; create it with ENCODING 'UTF8'"
        );
    }
    Ok(())
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(classify)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS parley_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    for (version, sql) in MIGRATIONS {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM parley_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
        if done.is_none() {
            sqlx::raw_sql(*sql)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            sqlx::query("INSERT INTO parley_migrations (version, applied_ms) VALUES ($1, $2)")
                .bind(version)
                .bind(parley_protocol::time::now_ms())
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            tracing::info!(version, "applied PostgreSQL migration");
        }
    }
    tx.commit().await.map_err(classify)
}

fn row_to_message(room: &str, row: &PgRow) -> Result<StoredMessage, StoreError> {
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

/// `parley_append` for a run of plain messages (migrations/postgres/0003):
/// the rooms are locked, duplicates found, seqs assigned, ts stamped and
/// rows inserted inside the database, in one round trip.
async fn append_plain<'e>(
    db: impl sqlx::PgExecutor<'e>,
    batch: &[NewMessage],
    indices: &[usize],
    out: &mut [Option<AppendOutcome>],
) -> Result<(), StoreError> {
    let run: Vec<&NewMessage> = indices.iter().map(|&i| &batch[i]).collect();
    let room: Vec<&str> = run.iter().map(|m| m.room.as_str()).collect();
    let sender: Vec<&str> = run.iter().map(|m| m.from.as_str()).collect();
    let body: Vec<&str> = run.iter().map(|m| m.text.as_str()).collect();
    let ts: Vec<i64> = run.iter().map(|m| m.ts_ms).collect();
    let nonce: Vec<Option<&str>> = run.iter().map(|m| m.nonce.as_deref()).collect();
    let rows: Vec<(i32, i64, bool, Option<String>, i64)> =
        sqlx::query_as("SELECT * FROM parley_append($1, $2, $3, $4, $5)")
            .bind(&room)
            .bind(&sender)
            .bind(&body)
            .bind(&ts)
            .bind(&nonce)
            .fetch_all(db)
            .await
            .map_err(classify)?;
    for (ord, seq, duplicate, original_body, ts_ms) in rows {
        let k = usize::try_from(ord - 1)
            .ok()
            .filter(|k| *k < indices.len())
            .ok_or_else(|| {
                StoreError::Internal(format!("parley_append returned position {ord}"))
            })?;
        let m = run[k];
        let stored = StoredMessage {
            text: original_body.unwrap_or_else(|| m.text.clone()),
            ..event_of(&m.room, m, seq as u64, ts_ms)
        };
        out[indices[k]] = Some(if duplicate {
            AppendOutcome::Duplicate(stored)
        } else {
            AppendOutcome::Stored(stored)
        });
    }
    Ok(())
}

fn bound(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The statements of an event append ([`EventTx`]), in the batch's
/// transaction (its rooms locked); stamps come from the database's clock as
/// for messages.
struct PgEvents<'a, 'c> {
    tx: &'a mut Transaction<'c, Postgres>,
}

impl PgEvents<'_, '_> {
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
impl EventTx for PgEvents<'_, '_> {
    async fn by_nonce(
        &mut self,
        room: &str,
        from: &str,
        nonce: &str,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM messages WHERE room = $1 AND nonce = $2 AND sender = $3"
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
        let sql = format!("SELECT {EVENT_COLUMNS} FROM messages WHERE room = $1 AND seq = $2");
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
             WHERE room = $1 AND target = $2 AND emoji = $3 AND user_key = $4",
        )
        .bind(room)
        .bind(bound(target))
        .bind(emoji)
        .bind(user_key)
        .fetch_optional(&mut **self.tx)
        .await
        .map_err(classify)
    }

    async fn next_seq(&mut self, room: &str, _accepted_ms: i64) -> Result<(u64, i64), StoreError> {
        let (seq, stamp): (i64, i64) = sqlx::query_as(concat!(
            "UPDATE rooms SET last_seq = last_seq + 1, last_ts = greatest(last_ts, ",
            now_ms!(),
            ") WHERE name = $1 RETURNING last_seq, last_ts"
        ))
        .bind(room)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
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
        sqlx::query("UPDATE messages SET body = $3, edited_ms = $4 WHERE room = $1 AND seq = $2")
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
            "UPDATE messages SET body = '', deleted = true WHERE room = $1 AND seq = $2",
            room,
            target,
        )
        .await?;
        self.run(
            "UPDATE messages SET body = '' WHERE room = $1 AND kind = 'edited' AND target = $2",
            room,
            target,
        )
        .await?;
        self.run(
            "DELETE FROM reactions WHERE room = $1 AND target = $2",
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
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
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
             FROM rooms r WHERE r.name = $1",
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
            "SELECT (SELECT role FROM members WHERE room = $1 AND user_key = $2), \
                    EXISTS (SELECT 1 FROM bans WHERE room = $1 AND user_key = $2)",
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
             VALUES ($1, $2, $3, $4, $5) \
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
            "DELETE FROM members WHERE room = $1 AND user_key = $2",
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
             VALUES ($1, $2, $3, $4, $5, $6) \
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
            "DELETE FROM bans WHERE room = $1 AND user_key = $2",
            room,
            user_key,
        )
        .await
    }

    async fn set_topic(&mut self, room: &str, topic: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE rooms SET topic = $2 WHERE name = $1")
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
    db: impl sqlx::PgExecutor<'e>,
    room: &str,
    user_key: &str,
) -> Result<Access, StoreError> {
    let row: Option<(bool, String, Option<String>, bool)> = sqlx::query_as(
        "SELECT r.private, r.topic, m.role, b.user_key IS NOT NULL FROM rooms r \
         LEFT JOIN members m ON m.room = r.name AND m.user_key = $2 \
         LEFT JOIN bans b ON b.room = r.name AND b.user_key = $2 \
         WHERE r.name = $1",
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
/// if the room exists. A concurrent insert of the same room (another
/// node's) is waited for: exactly one of them creates it, and only that one
/// writes an owner.
async fn insert_room(
    tx: &mut Transaction<'_, Postgres>,
    room: &str,
    owner: &str,
    private: bool,
    topic: &str,
) -> Result<bool, StoreError> {
    let created: Option<String> = sqlx::query_scalar(
        "INSERT INTO rooms (name, last_seq, created_ms, private, topic) VALUES ($1, 0, $2, $3, $4) \
         ON CONFLICT (name) DO NOTHING RETURNING name",
    )
    .bind(room)
    .bind(parley_protocol::time::now_ms())
    .bind(private)
    .bind(topic)
    .fetch_optional(&mut **tx)
    .await
    .map_err(classify)?;
    if created.is_none() {
        return Ok(false);
    }
    sqlx::query(concat!(
        "INSERT INTO members (room, user_key, username, role, since_ms) \
         VALUES ($1, $2, $3, 'owner', ",
        now_ms!(),
        ") ON CONFLICT (room, user_key) DO UPDATE SET role = 'owner'"
    ))
    .bind(room)
    .bind(parley_protocol::fold_username(owner))
    .bind(owner)
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    Ok(true)
}

#[async_trait]
impl Store for PgStore {
    /// A batch of plain messages is one call of `parley_append`, in one
    /// round trip. A batch with events is a transaction: the new rooms are
    /// created and every room of the batch locked in name order (the order
    /// `parley_append` locks in, so that two nodes' batches cannot
    /// deadlock), then each room's runs of plain messages and single events
    /// are appended in submission order.
    /// With several hosts, a batch whose commit is still running when the
    /// watcher gives its host up is abandoned as `Unavailable`: a primary
    /// cut off by a partition (not dead) would otherwise hold the node's
    /// committer until TCP gives up, minutes after the new primary was
    /// found. Nothing of it is acked; a commit that did land is found by
    /// its nonce when the client sends it again.
    async fn append_batch(&self, batch: &[NewMessage]) -> Result<Vec<AppendOutcome>, StoreError> {
        let Some(hosts) = &self.hosts else {
            return self.append_batch_here(batch).await;
        };
        tokio::select! {
            out = self.append_batch_here(batch) => out,
            () = hosts.switched() => {
                tracing::warn!(messages = batch.len(), "PostgreSQL: host switched during a commit; the batch is refused, nothing acked");
                Err(StoreError::Unavailable(
                    "the writable PostgreSQL host changed during the commit".into(),
                ))
            }
        }
    }

    async fn ensure_room(&self, room: &str) -> Result<u64, StoreError> {
        if let Some(seq) = self.last_seq(room).await? {
            return Ok(seq);
        }
        sqlx::query(
            "INSERT INTO rooms (name, last_seq, created_ms) VALUES ($1, 0, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(room)
        .bind(parley_protocol::time::now_ms())
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        // A new statement sees the row, whoever inserted it.
        self.last_seq(room).await?.ok_or_else(|| {
            StoreError::Internal(format!("room {room:?} missing right after its insert"))
        })
    }

    async fn last_seq(&self, room: &str) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM rooms WHERE name = $1")
            .bind(room)
            .fetch_optional(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(classify)?;
        if !insert_room(&mut tx, room, owner, private, topic).await? {
            return Err(StoreError::Conflict(format!("room {room:?} exists")));
        }
        tx.commit().await.map_err(classify)
    }

    async fn access(&self, room: &str, user_key: &str) -> Result<Access, StoreError> {
        access_of(&self.pool, room, user_key).await
    }

    /// A member's join is one read. Otherwise one transaction: the room is
    /// inserted if missing (`ON CONFLICT DO NOTHING`: of several nodes
    /// creating it at once, the one whose insert wins writes the owner;
    /// the others wait for its commit), else its row is share-locked
    /// (`FOR KEY SHARE`, which only an event append's `FOR UPDATE` holds
    /// off) so that a ban being appended is either seen or sees this
    /// member, and the user is added to a public room that has not banned it.
    async fn enter_room(&self, room: &str, user: &str) -> Result<Access, StoreError> {
        let key = parley_protocol::fold_username(user);
        let seen = access_of(&self.pool, room, &key).await?;
        if seen.exists && (seen.role.is_some() || seen.private || seen.banned) {
            return Ok(seen);
        }
        let mut tx = self.pool.begin().await.map_err(classify)?;
        if !insert_room(&mut tx, room, user, false, "").await? {
            sqlx::query("SELECT 1 FROM rooms WHERE name = $1 FOR KEY SHARE")
                .bind(room)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            // A new statement, so a new snapshot: it sees whatever the
            // lock's previous holder committed.
            sqlx::query(concat!(
                "INSERT INTO members (room, user_key, username, role, since_ms) \
                 SELECT r.name, $2, $3, 'member', ",
                now_ms!(),
                " FROM rooms r WHERE r.name = $1 AND NOT r.private \
                   AND NOT EXISTS (SELECT 1 FROM bans b WHERE b.room = r.name AND b.user_key = $2) \
                 ON CONFLICT (room, user_key) DO NOTHING"
            ))
            .bind(room)
            .bind(&key)
            .bind(user)
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
            "SELECT username, role, since_ms FROM members WHERE room = $1 \
             ORDER BY CASE role WHEN 'owner' THEN 0 WHEN 'moderator' THEN 1 ELSE 2 END, \
                      lower(username COLLATE \"C\"), username COLLATE \"C\"",
        )
        .bind(room)
        .fetch_all(&self.pool)
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
            "SELECT username, by_user, reason, at_ms FROM bans WHERE room = $1 \
             ORDER BY lower(username COLLATE \"C\"), username COLLATE \"C\"",
        )
        .bind(room)
        .fetch_all(&self.pool)
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
             LEFT JOIN members m ON m.room = r.name AND m.user_key = $1 \
             WHERE (NOT r.private OR starts_with(r.name, 'dm:') OR m.role IS NOT NULL OR $2) \
               AND ($2 OR NOT EXISTS (SELECT 1 FROM bans b WHERE b.room = r.name AND b.user_key = $1)) \
             ORDER BY r.name COLLATE \"C\"",
        )
        .bind(user_key)
        .bind(all)
        .fetch_all(&self.pool)
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
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, last_seq FROM rooms WHERE name = ANY($1)")
                .bind(&names)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        Ok(rows.into_iter().map(|(n, s)| (n, s as u64)).collect())
    }

    async fn rooms(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT name, last_seq FROM rooms ORDER BY name")
            .fetch_all(&self.pool)
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
             WHERE room = $1 AND seq > $2 AND seq < $3 ORDER BY seq ASC LIMIT $4"
        )))
        .bind(room)
        .bind(bound(after))
        .bind(bound(before))
        .bind(limit as i64)
        .fetch_all(&self.pool)
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
             WHERE room = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        )))
        .bind(room)
        .bind(bound(before))
        .bind(limit as i64)
        .fetch_all(&self.pool)
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
            "INSERT INTO read_state (user_key, room, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (user_key, room) DO UPDATE \
             SET seq = greatest(read_state.seq, excluded.seq) RETURNING seq",
        )
        .bind(user_key)
        .bind(room)
        .bind(bound(seq.min(last)))
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        Ok(Some(stored as u64))
    }

    async fn read_positions(&self, user_key: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT room, seq FROM read_state WHERE user_key = $1 ORDER BY room")
                .bind(user_key)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        Ok(rows.into_iter().map(|(r, s)| (r, s as u64)).collect())
    }

    async fn search(&self, query: &SearchQuery<'_>) -> Result<SearchPage, StoreError> {
        let before = query.before.map(search::parse_key_cursor).transpose()?;
        let (dm_prefix, dm_suffix) = search::dm_bounds(query.user_key);
        // Paged newest first by (ts, room, seq), a key every row has once
        // and in one order on every node. `plainto_tsquery` reads `q` as
        // plain words (every one must match), never as query syntax. Not a
        // prepared statement: each search is planned with its words, so the
        // planner can walk the order index for a common word and the GIN
        // index for a rare one (migrations/postgres/0007); a generic plan
        // would pick one for both, and be 1000× slower for the other.
        // Rooms the caller may not read (private ones it is not a member
        // of, those that banned it: not for a server admin) are left out
        // here, so that a page is full whenever there is more to find.
        let rows: Vec<HitRow> = sqlx::query_as(
            "SELECT room, seq, sender, body, ts_ms FROM messages \
             WHERE search @@ plainto_tsquery('simple'::regconfig, $1) AND search IS NOT NULL \
               AND ($2::bigint IS NULL OR (ts_ms, room, seq) < ($2, $3::text, $4::bigint)) \
               AND ($5::text IS NULL OR room = $5) \
               AND (NOT starts_with(room, 'dm:') OR starts_with(room, $6) OR right(room, length($7)) = $7) \
               AND ($9 OR (\
                    NOT EXISTS (SELECT 1 FROM bans b \
                                WHERE b.room = messages.room AND b.user_key = $10) \
                    AND NOT EXISTS (SELECT 1 FROM rooms r WHERE r.name = messages.room AND r.private \
                        AND NOT EXISTS (SELECT 1 FROM members mm \
                                        WHERE mm.room = r.name AND mm.user_key = $10)))) \
             ORDER BY ts_ms DESC, room DESC, seq DESC LIMIT $8",
        )
        .bind(query.q)
        .bind(before.as_ref().map(|c| c.ts_ms))
        .bind(before.as_ref().map(|c| c.room.as_str()))
        .bind(before.as_ref().map(|c| c.seq))
        .bind(query.room)
        .bind(dm_prefix)
        .bind(dm_suffix)
        .bind(i64::from(query.limit) + 1)
        .bind(query.admin)
        .bind(query.user_key)
        .persistent(false)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(search::page_of(
            rows,
            query,
            search::key_cursor,
            SearchHit::from,
        ))
    }

    async fn unread(&self, user_key: &str, room: &str) -> Result<Unread, StoreError> {
        let read_seq: i64 =
            sqlx::query_scalar("SELECT seq FROM read_state WHERE user_key = $1 AND room = $2")
                .bind(user_key)
                .bind(room)
                .fetch_optional(&self.pool)
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
        // Per room (in order: WITH ORDINALITY), the same capped range of the
        // key as `unread`, read once: its count and the bodies that may
        // mention the user.
        let names: Vec<&str> = rooms.iter().map(|(room, _)| room.as_str()).collect();
        let seqs: Vec<i64> = rooms.iter().map(|&(_, seq)| seq as i64).collect();
        let rows: Vec<(i64, Vec<String>)> = sqlx::query_as(
            "SELECT x.n, x.bodies \
             FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS w(room, read_seq, i) \
             CROSS JOIN LATERAL ( \
               SELECT count(*) AS n, \
                 coalesce(array_agg(body) FILTER (WHERE position($5 in lower(body)) > 0), \
                          '{}'::text[]) AS bodies \
               FROM (SELECT body FROM messages \
                     WHERE room = w.room AND seq > w.read_seq AND kind = 'message' \
                       AND NOT deleted AND lower(sender) <> $3 \
                     ORDER BY seq DESC LIMIT $4) u) x \
             ORDER BY w.i",
        )
        .bind(&names)
        .bind(&seqs)
        .bind(user_key)
        .bind(parley_protocol::UNREAD_CAP as i64)
        .bind(format!("@{user_key}"))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        unread_rows(user_key, rooms, rows)
    }

    async fn create_user(&self, name: &str, password_hash: &str) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO users (name, password_hash, created_ms, name_key, changed_ms) \
             VALUES ($1, $2, $3, $4, ",
            now_ms!(),
            ")"
        ))
        .bind(name)
        .bind(password_hash)
        .bind(parley_protocol::time::now_ms())
        .bind(parley_protocol::fold_username(name))
        .execute(&self.pool)
        .await
        .map_err(|e| match classify(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("username {name:?} is taken")),
            other => other,
        })?;
        Ok(())
    }

    async fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT password_hash FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn account(&self, key: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(concat!(account_select!(), " WHERE u.name_key = $1"))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(account_of).transpose()
    }

    async fn find_account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(concat!(
            account_select!(),
            " WHERE u.name = $1 OR u.name_key = $2 ORDER BY u.name = $1 DESC LIMIT 1"
        ))
        .bind(name)
        .bind(parley_protocol::fold_username(name))
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        row.as_ref().map(account_of).transpose()
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query(concat!(account_select!(), " ORDER BY u.name COLLATE \"C\""))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter().map(account_of).collect()
    }

    async fn set_password(
        &self,
        name: &str,
        password_hash: &str,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let key: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE users SET password_hash = $2 WHERE name = $1 RETURNING name_key",
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
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let key: Option<Option<String>> =
            sqlx::query_scalar("SELECT name_key FROM users WHERE name = $1 FOR UPDATE")
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
            // spelling: it gets it back only if no other one holds it (the
            // unique key catches a race with another enable).
            let holders: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM users WHERE lower(name COLLATE \"C\") = lower($1 COLLATE \"C\") \
                 AND name <> $1 AND (NOT disabled OR name_key IS NOT NULL)",
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
            sqlx::query("UPDATE users SET name_key = $2 WHERE name = $1")
                .bind(name)
                .bind(parley_protocol::fold_username(name))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        sqlx::query(concat!(
            "UPDATE users SET disabled = $2, changed_ms = ",
            now_ms!(),
            " WHERE name = $1"
        ))
        .bind(name)
        .bind(disabled)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(true)
    }

    async fn set_role(&self, name: &str, role: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET role = $2 WHERE name = $1")
            .bind(name)
            .bind(role)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn name_collisions(&self) -> Result<Vec<Vec<String>>, StoreError> {
        let unkeyed: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM users WHERE name_key IS NULL AND NOT disabled LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        if unkeyed.is_none() {
            return Ok(Vec::new());
        }
        sqlx::query(concat!(
            "UPDATE users SET name_key = lower(name COLLATE \"C\"), changed_ms = ",
            now_ms!(),
            " WHERE name_key IS NULL AND NOT disabled AND NOT EXISTS ( \
                 SELECT 1 FROM users o WHERE lower(o.name COLLATE \"C\") = lower(users.name COLLATE \"C\") \
                 AND o.name <> users.name AND (NOT o.disabled OR o.name_key IS NOT NULL))"
        ))
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM users WHERE lower(name COLLATE \"C\") IN \
             (SELECT lower(name COLLATE \"C\") FROM users WHERE name_key IS NULL AND NOT disabled)",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(group_collisions(names))
    }

    async fn stray_dm_rooms(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT name FROM rooms WHERE left(name, 3) = 'dm:' \
             AND name <> lower(name COLLATE \"C\") ORDER BY name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)
    }

    async fn revoke_token(
        &self,
        token_id: &str,
        user_key: &str,
        exp_s: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query(concat!(
            "INSERT INTO revoked_tokens (token_id, user_key, exp_s, revoked_ms) \
             VALUES ($1, $2, $3, ",
            now_ms!(),
            ") ON CONFLICT (token_id) DO NOTHING"
        ))
        .bind(token_id)
        .bind(user_key)
        .bind(exp_s)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query(
            "DELETE FROM revoked_tokens \
             WHERE exp_s < floor(extract(epoch from clock_timestamp()))::int8 - $1",
        )
        .bind(REVOKED_TOKEN_KEEP_S)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    async fn revoke_user_tokens(&self, user_key: &str) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let after = revoke_user(&mut tx, user_key).await?;
        tx.commit().await.map_err(classify)?;
        Ok(after)
    }

    async fn auth_changes(&self, since_ms: Option<i64>) -> Result<AuthChanges, StoreError> {
        let mut rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(concat!(
            "SELECT 'a', name_key, name, CASE WHEN disabled THEN 1::int8 ELSE 0::int8 END FROM users \
               WHERE name_key IS NOT NULL AND changed_ms >= $1 \
                 AND ($2 OR name <> name_key OR disabled) \
             UNION ALL SELECT 'r', user_key, NULL, tokens_after_s FROM user_revocations \
               WHERE changed_ms >= $1 \
             UNION ALL SELECT 't', token_id, NULL, exp_s FROM revoked_tokens \
               WHERE revoked_ms >= $1 \
                 AND exp_s >= floor(extract(epoch from clock_timestamp()))::int8 - $3 \
             UNION ALL SELECT 'c', '', NULL, ",
            now_ms!()
        ))
        .bind(since_ms.unwrap_or(i64::MIN))
        .bind(since_ms.is_some())
        .bind(REVOKED_TOKEN_KEEP_S)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        // The store's clock: the row the last arm added.
        let now_ms = match rows.iter().position(|(kind, ..)| kind == "c") {
            Some(i) => rows.swap_remove(i).3,
            None => return Err(StoreError::Internal("auth_changes without a clock".into())),
        };
        Ok(auth_changes_of(now_ms, rows))
    }

    async fn login_attempt(
        &self,
        user_key: &str,
        addr: &str,
        at_ms: i64,
        since_ms: i64,
    ) -> Result<LoginAttempt, StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE at_ms < $1")
            .bind(since_ms)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO login_failures (user_key, addr, at_ms) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(user_key)
        .bind(addr)
        .bind(at_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT user_key, addr, at_ms FROM login_failures \
             WHERE (user_key = $1 OR addr = $2) AND at_ms >= $3 AND id <> $4 ORDER BY at_ms, id",
        )
        .bind(user_key)
        .bind(addr)
        .bind(since_ms)
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(login_attempt_of(id, user_key, addr, rows))
    }

    async fn forget_login_attempt(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn clear_login_failures(&self, user_key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE user_key = $1")
            .bind(user_key)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }
}

fn account_of(row: &PgRow) -> Result<Account, StoreError> {
    Ok(Account {
        name: row.try_get("name").map_err(classify)?,
        key: row.try_get("name_key").map_err(classify)?,
        password_hash: row.try_get("password_hash").map_err(classify)?,
        role: row.try_get("role").map_err(classify)?,
        disabled: row.try_get("disabled").map_err(classify)?,
        created_ms: row.try_get("created_ms").map_err(classify)?,
        tokens_after_s: row.try_get("tokens_after_s").map_err(classify)?,
    })
}

/// Revokes every token of `key` issued so far, by the database's clock;
/// returns `tokens_after_s`.
async fn revoke_user(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: &str,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(concat!(
        "INSERT INTO user_revocations (user_key, tokens_after_s, changed_ms) \
         VALUES ($1, floor(extract(epoch from clock_timestamp()))::int8 + 1, ",
        now_ms!(),
        ") ON CONFLICT (user_key) DO UPDATE SET \
           tokens_after_s = GREATEST(user_revocations.tokens_after_s + 1, excluded.tokens_after_s), \
           changed_ms = excluded.changed_ms \
         RETURNING tokens_after_s"
    ))
    .bind(key)
    .fetch_one(&mut **tx)
    .await
    .map_err(classify)
}
