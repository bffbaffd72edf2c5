//! The fleet store: PostgreSQL, shared by every node.
//!
//! Gapless `seq` with several writers (invariant 2): a batch bumps each
//! room's `last_seq` by the number of new messages in one upsert, which
//! row-locks the room until the transaction commits, so another node's batch
//! for the same room waits and continues from the committed value. Rooms are
//! locked in name order within a batch, so two nodes' batches can never
//! deadlock. Messages are inserted with one `UNNEST` statement per room.
//! `synchronous_commit` stays the server's (on): a commit is durable.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::{AppendOutcome, NewMessage, Store, StoreError, StoredMessage, classify};

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

/// Appends one room's share of a batch (indices into `batch`, in order).
async fn append_room(
    tx: &mut Transaction<'_, Postgres>,
    room: &str,
    batch: &[NewMessage],
    indices: &[usize],
    out: &mut [Option<AppendOutcome>],
) -> Result<(), StoreError> {
    // Repeated nonces: look up the ones already stored in one query.
    let mut senders = Vec::new();
    let mut nonces = Vec::new();
    for &i in indices {
        if let Some(n) = &batch[i].nonce {
            senders.push(batch[i].from.clone());
            nonces.push(n.clone());
        }
    }
    let mut known: HashMap<(String, String), StoredMessage> = HashMap::new();
    if !nonces.is_empty() {
        let rows = sqlx::query(
            "SELECT m.seq, m.sender, m.body, m.ts_ms, m.nonce FROM messages m \
             JOIN UNNEST($2::text[], $3::text[]) AS k(sender, nonce) \
               ON m.sender = k.sender AND m.nonce = k.nonce \
             WHERE m.room = $1",
        )
        .bind(room)
        .bind(&senders)
        .bind(&nonces)
        .fetch_all(&mut **tx)
        .await
        .map_err(classify)?;
        for row in &rows {
            let m = row_to_message(room, row)?;
            if let Some(n) = m.nonce.clone() {
                known.insert((m.from.clone(), n), m);
            }
        }
    }
    // Decide which are new; a nonce repeated within the batch is a duplicate
    // of its first occurrence.
    let mut fresh: Vec<usize> = Vec::new();
    let mut first_of: HashMap<(String, String), usize> = HashMap::new();
    let mut dup_of_fresh: Vec<(usize, usize)> = Vec::new();
    for &i in indices {
        let m = &batch[i];
        if let Some(n) = &m.nonce {
            let key = (m.from.clone(), n.clone());
            if let Some(existing) = known.get(&key) {
                out[i] = Some(AppendOutcome::Duplicate(existing.clone()));
                continue;
            }
            if let Some(&first) = first_of.get(&key) {
                dup_of_fresh.push((i, first));
                continue;
            }
            first_of.insert(key, i);
        }
        fresh.push(i);
    }
    if !fresh.is_empty() {
        let n = fresh.len() as i64;
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO rooms (name, last_seq, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET last_seq = rooms.last_seq + EXCLUDED.last_seq RETURNING last_seq",
        )
        .bind(room)
        .bind(n)
        .bind(batch[fresh[0]].ts_ms)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)?;
        let first_seq = last - n + 1;
        let mut seqs = Vec::with_capacity(fresh.len());
        let mut from = Vec::with_capacity(fresh.len());
        let mut body = Vec::with_capacity(fresh.len());
        let mut ts = Vec::with_capacity(fresh.len());
        let mut nonce = Vec::with_capacity(fresh.len());
        for (k, &i) in fresh.iter().enumerate() {
            let m = &batch[i];
            let seq = first_seq + k as i64;
            seqs.push(seq);
            from.push(m.from.clone());
            body.push(m.text.clone());
            ts.push(m.ts_ms);
            nonce.push(m.nonce.clone());
            out[i] = Some(AppendOutcome::Stored(StoredMessage {
                room: room.to_string(),
                seq: seq as u64,
                from: m.from.clone(),
                text: m.text.clone(),
                ts_ms: m.ts_ms,
                nonce: m.nonce.clone(),
            }));
        }
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
    for (i, first) in dup_of_fresh {
        if let Some(AppendOutcome::Stored(m)) = &out[first] {
            out[i] = Some(AppendOutcome::Duplicate(m.clone()));
        }
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn append_batch(&self, batch: &[NewMessage]) -> Result<Vec<AppendOutcome>, StoreError> {
        // Group by room, rooms in name order (lock order), messages in batch order.
        let mut by_room: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, m) in batch.iter().enumerate() {
            by_room.entry(m.room.as_str()).or_default().push(i);
        }
        let mut out: Vec<Option<AppendOutcome>> = vec![None; batch.len()];
        let mut tx = self.pool.begin().await.map_err(classify)?;
        for (room, indices) in &by_room {
            append_room(&mut tx, room, batch, indices, &mut out).await?;
        }
        tx.commit().await.map_err(classify)?;
        out.into_iter()
            .map(|o| o.ok_or_else(|| StoreError::Internal("append outcome missing".into())))
            .collect()
    }

    async fn ensure_room(&self, room: &str) -> Result<u64, StoreError> {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO rooms (name, last_seq, created_ms) VALUES ($1, 0, $2) \
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING last_seq",
        )
        .bind(room)
        .bind(parley_protocol::time::now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        Ok(seq as u64)
    }

    async fn last_seq(&self, room: &str) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM rooms WHERE name = $1")
            .bind(room)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        Ok(seq.map(|s| s as u64))
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
