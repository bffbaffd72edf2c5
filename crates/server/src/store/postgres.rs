//! The fleet store: PostgreSQL, shared by every node.
//!
//! Gapless `seq` with several writers (invariant 2): a batch is one call of
//! the `parley_append` function (migrations/postgres/0002), which locks the
//! batch's rooms in name order — so two nodes' batches can never deadlock —
//! then numbers the new messages from each room's `last_seq` and inserts
//! them. Another node's batch for the same room waits for the lock and
//! continues from the committed value. One statement per batch: one round
//! trip and one implicit transaction, whatever the number of rooms.
//! `synchronous_commit` stays the server's (on): a commit is durable.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::{AppendOutcome, NewMessage, Store, StoreError, StoredMessage, classify};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_append_function.sql"),
    ),
];
/// Serialises migrations of nodes that start at the same time.
const MIGRATION_LOCK: i64 = 0x7061_726c_6579;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("bad PostgreSQL URL: {e}")))?
            .application_name("parley");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(classify)?;
        migrate(&pool).await?;
        Ok(Self { pool })
    }
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
    Ok(StoredMessage {
        room: room.to_string(),
        seq: seq as u64,
        from: row.try_get("sender").map_err(classify)?,
        text: row.try_get("body").map_err(classify)?,
        ts_ms: row.try_get("ts_ms").map_err(classify)?,
        nonce: row.try_get("nonce").map_err(classify)?,
    })
}

fn bound(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for PgStore {
    /// One call of `parley_append` (migrations/postgres/0002): the rooms are
    /// locked, duplicates found, seqs assigned and rows inserted inside the
    /// database, in one round trip.
    async fn append_batch(&self, batch: &[NewMessage]) -> Result<Vec<AppendOutcome>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let room: Vec<&str> = batch.iter().map(|m| m.room.as_str()).collect();
        let sender: Vec<&str> = batch.iter().map(|m| m.from.as_str()).collect();
        let body: Vec<&str> = batch.iter().map(|m| m.text.as_str()).collect();
        let ts: Vec<i64> = batch.iter().map(|m| m.ts_ms).collect();
        let nonce: Vec<Option<&str>> = batch.iter().map(|m| m.nonce.as_deref()).collect();
        let rows: Vec<(i32, i64, bool, Option<String>, i64)> =
            sqlx::query_as("SELECT * FROM parley_append($1, $2, $3, $4, $5)")
                .bind(&room)
                .bind(&sender)
                .bind(&body)
                .bind(&ts)
                .bind(&nonce)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        let mut out: Vec<Option<AppendOutcome>> = vec![None; batch.len()];
        for (ord, seq, duplicate, original_body, ts_ms) in rows {
            let i = usize::try_from(ord - 1)
                .ok()
                .filter(|i| *i < batch.len())
                .ok_or_else(|| {
                    StoreError::Internal(format!("parley_append returned position {ord}"))
                })?;
            let m = &batch[i];
            let stored = StoredMessage {
                room: m.room.clone(),
                seq: seq as u64,
                from: m.from.clone(),
                text: original_body.unwrap_or_else(|| m.text.clone()),
                ts_ms,
                nonce: m.nonce.clone(),
            };
            out[i] = Some(if duplicate {
                AppendOutcome::Duplicate(stored)
            } else {
                AppendOutcome::Stored(stored)
            });
        }
        out.into_iter()
            .map(|o| o.ok_or_else(|| StoreError::Internal("append outcome missing".into())))
            .collect()
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
        let rows = sqlx::query(
            "SELECT seq, sender, body, ts_ms, nonce FROM messages \
             WHERE room = $1 AND seq > $2 AND seq < $3 ORDER BY seq ASC LIMIT $4",
        )
        .bind(room)
        .bind(bound(after))
        .bind(bound(before))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter().map(|r| row_to_message(room, r)).collect()
    }

    async fn range_backward(
        &self,
        room: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, sender, body, ts_ms, nonce FROM messages \
             WHERE room = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(room)
        .bind(bound(before))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        let mut out = rows
            .iter()
            .map(|r| row_to_message(room, r))
            .collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    async fn create_user(&self, name: &str, password_hash: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO users (name, password_hash, created_ms) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(password_hash)
            .bind(parley_protocol::time::now_ms())
            .execute(&self.pool)
            .await
            .map_err(|e| match classify(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("username {name:?} is taken"))
                }
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
}
