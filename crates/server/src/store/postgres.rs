//! The fleet store: PostgreSQL, shared by every node.
//!
//! Gapless `seq` with several writers (invariant 2): a batch bumps each
//! room's `last_seq` by the number of new messages in one upsert, which
//! row-locks the room until the transaction commits, so another node's batch
//! for the same room waits and continues from the committed value. Rooms are
//! locked in name order within a batch, so two nodes' batches can never
//! deadlock. Messages are inserted with one `UNNEST` statement per room.
//! `synchronous_commit` stays the server's (on): a commit is durable.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::{
    AppendOutcome, NewMessage, Store, StoreError, StoredMessage, apply_plan, by_room, classify,
    nonce_keys, plan_room,
};

const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../migrations/postgres/0001_init.sql"))];
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

/// Appends one room's share of a batch (indices into `batch`, in order):
/// one nonce lookup, one `last_seq` bump that row-locks the room, one
/// `UNNEST` insert.
async fn append_room(
    tx: &mut Transaction<'_, Postgres>,
    room: &str,
    batch: &[NewMessage],
    indices: &[usize],
    out: &mut [Option<AppendOutcome>],
) -> Result<(), StoreError> {
    let keys = nonce_keys(batch, indices);
    let mut stored = HashMap::new();
    if !keys.is_empty() {
        // By (room, nonce) — the unique index's prefix, so each nonce is an
        // index probe however large the room — then by sender here.
        let nonces: Vec<&str> = keys.iter().map(|(_, n)| n.as_str()).collect();
        let rows = sqlx::query(
            "SELECT seq, sender, body, ts_ms, nonce FROM messages WHERE room = $1 AND nonce = ANY($2::text[])",
        )
        .bind(room)
        .bind(&nonces)
        .fetch_all(&mut **tx)
        .await
        .map_err(classify)?;
        for row in &rows {
            let m = row_to_message(room, row)?;
            if let Some(n) = m.nonce.clone() {
                stored.insert((m.from.clone(), n), m);
            }
        }
    }
    let plan = plan_room(batch, indices, &stored);
    let n = plan.fresh.len() as i64;
    let mut first_seq = 0;
    if n > 0 {
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO rooms (name, last_seq, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET last_seq = rooms.last_seq + EXCLUDED.last_seq RETURNING last_seq",
        )
        .bind(room)
        .bind(n)
        .bind(batch[plan.fresh[0]].ts_ms)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)?;
        first_seq = last - n + 1;
        let fresh = || plan.fresh.iter().map(|&i| &batch[i]);
        let seqs: Vec<i64> = (0..n).map(|k| first_seq + k).collect();
        let from: Vec<&str> = fresh().map(|m| m.from.as_str()).collect();
        let body: Vec<&str> = fresh().map(|m| m.text.as_str()).collect();
        let ts: Vec<i64> = fresh().map(|m| m.ts_ms).collect();
        let nonce: Vec<Option<&str>> = fresh().map(|m| m.nonce.as_deref()).collect();
        sqlx::query(
            "INSERT INTO messages (room, seq, sender, body, ts_ms, nonce) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[])",
        )
        .bind(room)
        .bind(&seqs)
        .bind(&from)
        .bind(&body)
        .bind(&ts)
        .bind(&nonce)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    }
    apply_plan(room, batch, plan, first_seq as u64, out);
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn append_batch(&self, batch: &[NewMessage]) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut out: Vec<Option<AppendOutcome>> = vec![None; batch.len()];
        let mut tx = self.pool.begin().await.map_err(classify)?;
        for (room, indices) in &by_room(batch) {
            append_room(&mut tx, room, batch, indices, &mut out).await?;
        }
        tx.commit().await.map_err(classify)?;
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
