//! The embedded default store: SQLite in WAL mode.
//!
//! Writes go through one dedicated connection (SQLite has a single writer
//! anyway; a second writer would only meet `SQLITE_BUSY`), reads through a
//! small pool that WAL lets run beside the writer. `synchronous=FULL`: a
//! commit is on disk before it returns, so an ack survives a power cut; group
//! commit (see [`super::group_commit`]) pays that fsync once per batch.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use std::collections::HashMap;

use super::{
    AppendOutcome, NewMessage, Store, StoreError, StoredMessage, apply_plan, by_room, classify,
    nonce_keys, plan_room,
};

const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../migrations/sqlite/0001_init.sql"))];

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
    Ok(StoredMessage {
        room: room.to_string(),
        seq: seq as u64,
        from: row.try_get("sender").map_err(classify)?,
        text: row.try_get("body").map_err(classify)?,
        ts_ms: row.try_get("ts_ms").map_err(classify)?,
        nonce: row.try_get("nonce").map_err(classify)?,
    })
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
async fn append_room(
    tx: &mut Transaction<'_, Sqlite>,
    room: &str,
    batch: &[NewMessage],
    indices: &[usize],
    out: &mut [Option<AppendOutcome>],
) -> Result<(), StoreError> {
    let keys = nonce_keys(batch, indices);
    let mut stored = HashMap::new();
    for chunk in keys.chunks(LOOKUP_CHUNK) {
        let placeholders = vec!["?"; chunk.len()].join(",");
        let sql = format!(
            "SELECT seq, sender, body, ts_ms, nonce FROM messages WHERE room = ? AND nonce IN ({placeholders})"
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
    if n > 0 {
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO rooms (name, last_seq, created_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET last_seq = rooms.last_seq + excluded.last_seq RETURNING last_seq",
        )
        .bind(room)
        .bind(n)
        .bind(batch[plan.fresh[0]].ts_ms)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)?;
        first_seq = last - n + 1;
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
                    .bind(m.ts_ms)
                    .bind(&m.nonce);
            }
            query.execute(&mut **tx).await.map_err(classify)?;
        }
    }
    apply_plan(room, batch, plan, first_seq as u64, out);
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn append_batch(&self, batch: &[NewMessage]) -> Result<Vec<AppendOutcome>, StoreError> {
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
        for (room, indices) in &by_room(batch) {
            append_room(&mut tx, room, batch, indices, &mut out).await?;
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
        let rows = sqlx::query(
            "SELECT seq, sender, body, ts_ms, nonce FROM messages \
             WHERE room = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq ASC LIMIT ?4",
        )
        .bind(room)
        .bind(bound(after))
        .bind(bound(before))
        .bind(limit as i64)
        .fetch_all(&self.reader)
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
             WHERE room = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
        )
        .bind(room)
        .bind(bound(before))
        .bind(limit as i64)
        .fetch_all(&self.reader)
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
        sqlx::query("INSERT INTO users (name, password_hash, created_ms) VALUES (?1, ?2, ?3)")
            .bind(name)
            .bind(password_hash)
            .bind(parley_protocol::time::now_ms())
            .execute(&self.writer)
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
}
