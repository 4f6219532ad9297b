//! The SQL side: schema, the append-only revision log, leases, and the
//! statements the writer and follower run. One code path for SQLite,
//! PostgreSQL and MySQL/MariaDB through sqlx's `Any` driver; the few dialect
//! differences live in `Dialect`.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row as _};

use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::mvcc::{Entry, Rev, Row};

/// SQL dialect of the configured database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

impl Dialect {
    fn blob(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BLOB",
            Dialect::Postgres => "BYTEA",
            Dialect::Mysql => "LONGBLOB",
        }
    }

    /// Whether several k3rs-datastore processes may share the database.
    pub fn shared(self) -> bool {
        self != Dialect::Sqlite
    }

    /// Rewrites `?` placeholders into `$n` for PostgreSQL.
    fn sql(self, q: &str) -> String {
        if self != Dialect::Postgres {
            return q.to_string();
        }
        let mut out = String::with_capacity(q.len() + 16);
        let mut n = 0;
        for ch in q.chars() {
            if ch == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(ch);
            }
        }
        out
    }
}

/// Lease row: (ttl seconds, expiry in unix milliseconds).
pub type LeaseRow = (i64, i64);

/// A change to the lease table made by a batch.
#[derive(Debug, Clone)]
pub enum LeaseChange {
    Insert { id: i64, ttl: i64, expiry: i64 },
    Refresh { id: i64, expiry: i64 },
    Delete { id: i64 },
}

/// Connection pool plus dialect.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub dialect: Dialect,
}

/// Rows per multi-row INSERT (well under every backend's parameter limit).
const INSERT_CHUNK: usize = 64;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Connects (creating the SQLite file or the server database if needed) and
    /// creates the schema. Fails fast; the caller retries with back-off.
    pub async fn open(endpoint: &Endpoint) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let (dialect, url, max_conns) = match endpoint {
            Endpoint::Sqlite(path) => {
                if let Some(dir) = path.parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir)?;
                }
                (
                    Dialect::Sqlite,
                    format!("sqlite://{}?mode=rwc", path.display()),
                    4,
                )
            }
            Endpoint::Postgres(u) => {
                create_database(endpoint).await?;
                (Dialect::Postgres, u.clone(), 8)
            }
            Endpoint::Mysql(u) => {
                create_database(endpoint).await?;
                (Dialect::Mysql, u.clone(), 8)
            }
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_conns)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    let stmts: &[&str] = match dialect {
                        Dialect::Sqlite => &[
                            "PRAGMA journal_mode=WAL",
                            // FULL: every acknowledged commit survives power loss, like etcd's fsync.
                            "PRAGMA synchronous=FULL",
                            "PRAGMA busy_timeout=5000",
                            "PRAGMA foreign_keys=OFF",
                        ],
                        Dialect::Mysql => {
                            &["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"]
                        }
                        Dialect::Postgres => &[],
                    };
                    for s in stmts {
                        sqlx::query(s).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        let db = Db { pool, dialect };
        db.create_schema().await?;
        Ok(db)
    }

    async fn create_schema(&self) -> Result<(), Error> {
        let blob = self.dialect.blob();
        let stmts = [
            format!(
                "CREATE TABLE IF NOT EXISTS k3rs_kv (
                    rev BIGINT NOT NULL,
                    sub BIGINT NOT NULL,
                    name {blob} NOT NULL,
                    value {blob} NOT NULL,
                    create_rev BIGINT NOT NULL,
                    version BIGINT NOT NULL,
                    lease BIGINT NOT NULL,
                    del BIGINT NOT NULL,
                    PRIMARY KEY (rev, sub))"
            ),
            "CREATE TABLE IF NOT EXISTS k3rs_meta (
                id BIGINT NOT NULL PRIMARY KEY,
                rev BIGINT NOT NULL,
                compact_rev BIGINT NOT NULL,
                cluster_id BIGINT NOT NULL)"
                .to_string(),
            "CREATE TABLE IF NOT EXISTS k3rs_lease (
                id BIGINT NOT NULL PRIMARY KEY,
                ttl BIGINT NOT NULL,
                expiry BIGINT NOT NULL)"
                .to_string(),
        ];
        for s in &stmts {
            sqlx::query(s).execute(&self.pool).await?;
        }
        let cluster_id = (rand::random::<u64>() >> 1) as i64;
        let insert = match self.dialect {
            Dialect::Sqlite => {
                "INSERT OR IGNORE INTO k3rs_meta (id, rev, compact_rev, cluster_id) VALUES (1, 1, 0, ?)"
            }
            Dialect::Postgres => {
                "INSERT INTO k3rs_meta (id, rev, compact_rev, cluster_id) VALUES (1, 1, 0, ?) ON CONFLICT DO NOTHING"
            }
            Dialect::Mysql => {
                "INSERT IGNORE INTO k3rs_meta (id, rev, compact_rev, cluster_id) VALUES (1, 1, 0, ?)"
            }
        };
        sqlx::query(&self.dialect.sql(insert))
            .bind(cluster_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// (revision, compacted revision, cluster id) as committed.
    pub async fn meta(&self) -> Result<(i64, i64, i64), Error> {
        let row = sqlx::query("SELECT rev, compact_rev, cluster_id FROM k3rs_meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    }

    /// Every log row above `after`, in revision order.
    pub async fn rows_after<'e, E>(&self, exec: E, after: i64) -> Result<Vec<Row>, Error>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let q = self.dialect.sql(
            "SELECT rev, sub, name, value, create_rev, version, lease, del FROM k3rs_kv WHERE rev > ? ORDER BY rev, sub",
        );
        let rows = sqlx::query(&q).bind(after).fetch_all(exec).await?;
        rows.iter().map(decode_row).collect()
    }

    /// Every lease.
    pub async fn leases(&self) -> Result<Vec<(i64, LeaseRow)>, Error> {
        let rows = sqlx::query("SELECT id, ttl, expiry FROM k3rs_lease ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?))))
            .collect()
    }

    pub async fn lease(&self, id: i64) -> Result<Option<LeaseRow>, Error> {
        let q = self
            .dialect
            .sql("SELECT ttl, expiry FROM k3rs_lease WHERE id = ?");
        let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
            None => None,
        })
    }

    /// Ids of leases whose expiry has passed.
    pub async fn expired_leases(&self, now: i64) -> Result<Vec<i64>, Error> {
        let q = self
            .dialect
            .sql("SELECT id FROM k3rs_lease WHERE expiry <= ? ORDER BY id");
        let rows = sqlx::query(&q).bind(now).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Gives every lease a fresh TTL, as etcd does when a new leader takes over:
    /// nobody could renew them while the datastore was down.
    pub async fn extend_leases(&self, now: i64) -> Result<(), Error> {
        let q = self
            .dialect
            .sql("UPDATE k3rs_lease SET expiry = ? + ttl * 1000 WHERE expiry < ? + ttl * 1000");
        sqlx::query(&q)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Physically deletes compacted rows, in small transactions.
    pub async fn delete_revs(&self, revs: &[Rev]) -> Result<(), Error> {
        for chunk in revs.chunks(256) {
            let mut q = String::from("DELETE FROM k3rs_kv WHERE ");
            for (i, _) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push_str(" OR ");
                }
                q.push_str("(rev = ? AND sub = ?)");
            }
            let q = self.dialect.sql(&q);
            let mut query = sqlx::query(&q);
            for r in chunk {
                query = query.bind(r.main).bind(r.sub);
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Writes a consistent copy of the whole SQLite database to `dest` while
    /// writers keep going (`VACUUM INTO` reads one snapshot of the WAL).
    /// Server databases are backed up with their own tools.
    pub async fn backup_to(&self, dest: &std::path::Path) -> Result<(), Error> {
        if self.dialect != Dialect::Sqlite {
            return Err(Error::Unimplemented(
                "snapshots of a PostgreSQL or MySQL datastore are taken with pg_dump / mysqldump",
            ));
        }
        let _ = std::fs::remove_file(dest);
        sqlx::query("VACUUM INTO ?")
            .bind(dest.display().to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The SQLite file this pool has open (`None` for server databases).
    pub async fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        if self.dialect != Dialect::Sqlite {
            return None;
        }
        let row = sqlx::query("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(&self.pool)
            .await
            .ok()?;
        let file: String = row.try_get(0).ok()?;
        (!file.is_empty()).then(|| file.into())
    }

    /// Approximate on-disk size, for Status.
    pub async fn size(&self) -> i64 {
        let q = match self.dialect {
            Dialect::Sqlite => {
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
            }
            Dialect::Postgres => "SELECT CAST(pg_database_size(current_database()) AS BIGINT)",
            Dialect::Mysql => {
                "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) FROM information_schema.tables WHERE table_schema = DATABASE()"
            }
        };
        match sqlx::query(q).fetch_one(&self.pool).await {
            Ok(row) => row.try_get::<i64, _>(0).unwrap_or(0),
            Err(_) => 0,
        }
    }
}

/// The statements of one writer batch, run inside one database transaction.
pub struct BatchTx<'c> {
    tx: sqlx::Transaction<'c, sqlx::Any>,
    dialect: Dialect,
}

impl Db {
    /// Opens the batch transaction and takes the global write lock (the meta
    /// row), so writers on every instance sharing the database are serialised.
    /// Returns the committed (revision, compacted revision).
    pub async fn begin_batch(&self) -> Result<(BatchTx<'static>, i64, i64), Error> {
        let mut tx = self.pool.begin().await?;
        let q = match self.dialect {
            Dialect::Sqlite => {
                // Take SQLite's write lock now rather than at the first insert.
                sqlx::query("UPDATE k3rs_meta SET rev = rev WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                "SELECT rev, compact_rev FROM k3rs_meta WHERE id = 1"
            }
            _ => "SELECT rev, compact_rev FROM k3rs_meta WHERE id = 1 FOR UPDATE",
        };
        let row = sqlx::query(q).fetch_one(&mut *tx).await?;
        let (rev, compacted) = (row.try_get(0)?, row.try_get(1)?);
        Ok((
            BatchTx {
                tx,
                dialect: self.dialect,
            },
            rev,
            compacted,
        ))
    }
}

impl BatchTx<'_> {
    pub async fn rows_after(&mut self, db: &Db, after: i64) -> Result<Vec<Row>, Error> {
        db.rows_after(&mut *self.tx, after).await
    }

    /// Leases among `ids` that exist now.
    pub async fn leases(&mut self, ids: &[i64]) -> Result<HashMap<i64, LeaseRow>, Error> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(256) {
            let mut q = String::from("SELECT id, ttl, expiry FROM k3rs_lease WHERE id IN (");
            for i in 0..chunk.len() {
                q.push_str(if i == 0 { "?" } else { ", ?" });
            }
            q.push(')');
            let q = self.dialect.sql(&q);
            let mut query = sqlx::query(&q);
            for id in chunk {
                query = query.bind(*id);
            }
            for r in query.fetch_all(&mut *self.tx).await? {
                out.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?));
            }
        }
        Ok(out)
    }

    pub async fn insert_rows(&mut self, rows: &[Row]) -> Result<(), Error> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut q = String::from(
                "INSERT INTO k3rs_kv (rev, sub, name, value, create_rev, version, lease, del) VALUES ",
            );
            for i in 0..chunk.len() {
                q.push_str(if i == 0 {
                    "(?, ?, ?, ?, ?, ?, ?, ?)"
                } else {
                    ", (?, ?, ?, ?, ?, ?, ?, ?)"
                });
            }
            let q = self.dialect.sql(&q);
            let mut query = sqlx::query(&q);
            for r in chunk {
                let e = &r.entry;
                query = query
                    .bind(e.rev.main)
                    .bind(e.rev.sub)
                    .bind(r.key.to_vec())
                    .bind(e.value.as_ref().map(|v| v.to_vec()).unwrap_or_default())
                    .bind(e.create)
                    .bind(e.version)
                    .bind(e.lease)
                    .bind(i64::from(e.value.is_none()));
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn lease_changes(&mut self, changes: &[LeaseChange]) -> Result<(), Error> {
        for c in changes {
            let (q, a, b, c3) = match *c {
                LeaseChange::Insert { id, ttl, expiry } => (
                    "INSERT INTO k3rs_lease (id, ttl, expiry) VALUES (?, ?, ?)",
                    id,
                    Some(ttl),
                    Some(expiry),
                ),
                LeaseChange::Refresh { id, expiry } => (
                    "UPDATE k3rs_lease SET expiry = ? WHERE id = ?",
                    expiry,
                    Some(id),
                    None,
                ),
                LeaseChange::Delete { id } => {
                    ("DELETE FROM k3rs_lease WHERE id = ?", id, None, None)
                }
            };
            let q = self.dialect.sql(q);
            let mut query = sqlx::query(&q).bind(a);
            if let Some(b) = b {
                query = query.bind(b);
            }
            if let Some(c3) = c3 {
                query = query.bind(c3);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Records the new revision / compaction point, wakes other instances, commits.
    pub async fn commit(mut self, rev: i64, compacted: i64) -> Result<(), Error> {
        let q = self
            .dialect
            .sql("UPDATE k3rs_meta SET rev = ?, compact_rev = ? WHERE id = 1");
        sqlx::query(&q)
            .bind(rev)
            .bind(compacted)
            .execute(&mut *self.tx)
            .await?;
        if self.dialect == Dialect::Postgres {
            // Delivered on commit to every instance LISTENing (see `follower`).
            sqlx::query(&format!("NOTIFY {NOTIFY_CHANNEL}, '{rev}'"))
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

/// PostgreSQL channel on which writers announce new revisions.
pub const NOTIFY_CHANNEL: &str = "k3rs_datastore_rev";

fn decode_row(r: &sqlx::any::AnyRow) -> Result<Row, Error> {
    let del: i64 = r.try_get(7)?;
    let key: Vec<u8> = r.try_get(2)?;
    let value: Vec<u8> = r.try_get(3)?;
    Ok(Row {
        key: Bytes::from(key),
        entry: Entry {
            rev: Rev {
                main: r.try_get(0)?,
                sub: r.try_get(1)?,
            },
            create: r.try_get(4)?,
            version: r.try_get(5)?,
            lease: r.try_get(6)?,
            value: if del != 0 {
                None
            } else {
                Some(Bytes::from(value))
            },
        },
    })
}

/// Creates the PostgreSQL / MySQL database named in the endpoint when missing.
async fn create_database(endpoint: &Endpoint) -> Result<(), Error> {
    let Some(name) = endpoint.database_name() else {
        return Ok(());
    };
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::Config(format!(
            "database name {name:?} may only contain letters, digits, '_' and '-'"
        )));
    }
    match endpoint {
        Endpoint::Postgres(u) => {
            let mut admin = url::Url::parse(u).map_err(|e| Error::Config(e.to_string()))?;
            admin.set_path("/postgres");
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect(admin.as_str())
                .await?;
            let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&pool)
                .await?
                .is_some();
            if !exists {
                let r = sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&pool)
                    .await;
                if let Err(e) = r {
                    // Another instance may have created it a moment ago.
                    let raced = e
                        .as_database_error()
                        .and_then(|d| d.code())
                        .is_some_and(|c| c == "42P04" || c == "23505");
                    if !raced {
                        return Err(e.into());
                    }
                }
            }
            pool.close().await;
        }
        Endpoint::Mysql(u) => {
            let mut admin = url::Url::parse(u).map_err(|e| Error::Config(e.to_string()))?;
            admin.set_path("/");
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect(admin.as_str())
                .await?;
            sqlx::query(&format!("CREATE DATABASE IF NOT EXISTS `{name}`"))
                .execute(&pool)
                .await?;
            pool.close().await;
        }
        Endpoint::Sqlite(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders() {
        assert_eq!(
            Dialect::Postgres.sql("SELECT ? , ?"),
            "SELECT $1 , $2".to_string()
        );
        assert_eq!(Dialect::Mysql.sql("SELECT ?"), "SELECT ?".to_string());
    }
}
