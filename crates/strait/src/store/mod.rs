//! Persistence of the desired state (environments, proxies, deployments, consumers) and of its change
//! history, behind [`Store`]. Owns the schema, every SQL statement and the durability
//! settings; objects are kept exactly as given (validation belongs to `control`). It may not
//! know about HTTP, the gateway or the configuration model: its only tie to the rest of the
//! crate is the [`HistoryEntry`] row that `control` hands on.
//!
//! SQLite today (one file, created if missing, nothing to install). The statements are
//! written in the dialect SQLite and PostgreSQL share (`$n` binds, `ON CONFLICT`, JSON as
//! TEXT) so that a PostgreSQL backend only adds its connection and its `schema::TABLES`.

mod schema;
pub(crate) mod time;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::control::HistoryEntry;

/// How long a write waits for another connection (or process) holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections to a database file: WAL lets readers run beside the one writer.
const FILE_CONNECTIONS: u32 = 4;

/// The desired state as stored. Objects are JSON exactly as in the YAML file (`name`
/// included; proxies without `deploy`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub environments: BTreeMap<String, Value>,
    pub proxies: BTreeMap<String, Value>,
    /// (proxy, environment).
    pub deployments: BTreeSet<(String, String)>,
    /// Consumers as in the YAML file, their credentials sealed (hashed) by the control plane.
    pub consumers: BTreeMap<String, Value>,
    /// Named upstreams (`upstreams:` in the YAML file) that proxies use by name.
    pub upstreams: BTreeMap<String, Value>,
}

/// One edit of the stored state.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Creates or replaces.
    PutEnvironment {
        name: String,
        body: Value,
    },
    /// Also removes the environment's deployments.
    DeleteEnvironment {
        name: String,
    },
    /// Creates or replaces; the proxy's deployments stay.
    PutProxy {
        name: String,
        body: Value,
    },
    /// Also removes the proxy's deployments.
    DeleteProxy {
        name: String,
    },
    /// Idempotent.
    Deploy {
        proxy: String,
        environment: String,
    },
    Undeploy {
        proxy: String,
        environment: String,
    },
    /// Creates or replaces.
    PutConsumer {
        name: String,
        body: Value,
    },
    DeleteConsumer {
        name: String,
    },
    /// Creates or replaces.
    PutUpstream {
        name: String,
        body: Value,
    },
    DeleteUpstream {
        name: String,
    },
    /// Swaps everything (a declarative reload, `apply`).
    Replace {
        state: State,
    },
}

/// What one history row says; its id and time are given when it is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub action: String,
    pub object: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Why the store failed. Each message names the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {database}: {source}")]
    Open {
        database: String,
        source: sqlx::Error,
    },
    #[error("cannot prepare the tables of the database {database}: {source}")]
    Schema {
        database: String,
        source: sqlx::Error,
    },
    #[error(
        "the database {database} has schema version {found}, but this strait understands versions up to {supported}; upgrade strait to use it"
    )]
    NewerSchema {
        database: String,
        found: i64,
        supported: i64,
    },
    #[error("cannot read the database {database}: {source}")]
    Read {
        database: String,
        source: sqlx::Error,
    },
    #[error("cannot write to the database {database} (nothing of this change was kept): {source}")]
    Write {
        database: String,
        source: sqlx::Error,
    },
    #[error("the database {database} is damaged: {detail}")]
    Damaged { database: String, detail: String },
}

/// The desired state and its history in one database.
pub struct Store {
    pool: SqlitePool,
    /// How messages name the database: its path, or `:memory:`.
    database: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database file, creating it (not its directory) if missing.
    ///
    /// Durability: WAL journal with `synchronous = FULL`. WAL alone makes a killed process
    /// harmless (a commit is in the log before it returns, and a torn last transaction is
    /// ignored on the next open); FULL also syncs the log at every commit, so a change the
    /// admin API acknowledged survives a power loss or kernel crash. Writes are human-paced
    /// edits, so the one fsync per commit costs nothing that matters.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let database = path.display().to_string();
        let options = SqliteConnectOptions::new()
            .filename(literal_path(path))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(FILE_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                database: database.clone(),
                source,
            })?;
        let store = Store { pool, database };
        store.prepare().await?;
        Ok(store)
    }

    /// A database in memory (declarative mode keeps its history here), gone with the store.
    ///
    /// Each connection to `:memory:` is a database of its own, so the pool holds exactly one
    /// connection and never retires it.
    pub async fn memory() -> Result<Store, StoreError> {
        let database = ":memory:".to_owned();
        let options = SqliteConnectOptions::new().in_memory(true);
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                database: database.clone(),
                source,
            })?;
        let store = Store { pool, database };
        store.prepare().await?;
        Ok(store)
    }

    /// The whole stored state, read in one transaction.
    pub async fn load(&self) -> Result<State, StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.read(e))?;
        let environments = self
            .objects(&mut tx, schema::ENVIRONMENTS, "environment")
            .await?;
        let proxies = self.objects(&mut tx, schema::PROXIES, "proxy").await?;
        let consumers = self.objects(&mut tx, schema::CONSUMERS, "consumer").await?;
        let upstreams = self.objects(&mut tx, schema::UPSTREAMS, "upstream").await?;
        let deployments: Vec<(String, String)> = sqlx::query_as(schema::DEPLOYMENTS)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.read(e))?;
        tx.commit().await.map_err(|e| self.read(e))?;
        Ok(State {
            environments,
            proxies,
            deployments: deployments.into_iter().collect(),
            consumers,
            upstreams,
        })
    }

    /// Applies the changes and appends one history row per record, all in one transaction:
    /// either everything is kept or nothing is.
    pub async fn commit(&self, changes: &[Change], records: &[Record]) -> Result<(), StoreError> {
        if changes.is_empty() && records.is_empty() {
            return Ok(());
        }
        let write = |source| StoreError::Write {
            database: self.database.clone(),
            source,
        };
        // IMMEDIATE takes the write lock up front, so a concurrent writer waits (busy
        // timeout) instead of failing halfway through.
        let mut tx = self
            .pool
            .begin_with(schema::BEGIN_WRITE)
            .await
            .map_err(write)?;
        let time = time::rfc3339_millis(SystemTime::now());
        match write_all(&mut tx, changes, records, &time).await {
            Ok(()) => tx.commit().await.map_err(write),
            Err(error) => {
                // Dropping the transaction rolls back too; this only does it now.
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(%rollback, database = %self.database, "rollback failed");
                }
                Err(write(error))
            }
        }
    }

    /// History rows newest first, skipping `offset` and returning at most `limit`, with the
    /// total number of rows.
    pub async fn history(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<HistoryEntry>, u64), StoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.read(e))?;
        let total: i64 = sqlx::query_scalar(schema::HISTORY_COUNT)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.read(e))?;
        type Row = (i64, String, String, String, Option<String>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(schema::HISTORY_PAGE)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.read(e))?;
        tx.commit().await.map_err(|e| self.read(e))?;
        let entries = rows
            .into_iter()
            .map(|(id, time, action, object, before, after)| {
                let what = |side: &str| format!("history row {id} ({side})");
                Ok(HistoryEntry {
                    id: u64::try_from(id)
                        .map_err(|_| self.damaged(format!("history row id {id} is negative")))?,
                    time,
                    action,
                    object,
                    before: before
                        .map(|text| self.json(&text, || what("before")))
                        .transpose()?,
                    after: after
                        .map(|text| self.json(&text, || what("after")))
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let total = u64::try_from(total)
            .map_err(|_| self.damaged(format!("the history counts {total} rows")))?;
        Ok((entries, total))
    }

    /// Creates the tables if missing and checks the schema version, in one transaction.
    async fn prepare(&self) -> Result<(), StoreError> {
        let schema = |source| StoreError::Schema {
            database: self.database.clone(),
            source,
        };
        let mut tx = self
            .pool
            .begin_with(schema::BEGIN_WRITE)
            .await
            .map_err(schema)?;
        for statement in schema::TABLES {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(schema)?;
        }
        let found: Option<i64> = sqlx::query_scalar(schema::VERSION)
            .fetch_one(&mut *tx)
            .await
            .map_err(schema)?;
        match found {
            None => {
                sqlx::query(schema::SET_VERSION)
                    .bind(schema::CURRENT)
                    .execute(&mut *tx)
                    .await
                    .map_err(schema)?;
            }
            Some(found) if found > schema::CURRENT => {
                return Err(StoreError::NewerSchema {
                    database: self.database.clone(),
                    found,
                    supported: schema::CURRENT,
                });
            }
            // Version 1 lacked the consumers table and version 2 the upstreams table, which
            // TABLES has just created.
            Some(found) if found < schema::CURRENT => {
                sqlx::query(schema::UPGRADE_VERSION)
                    .bind(schema::CURRENT)
                    .execute(&mut *tx)
                    .await
                    .map_err(schema)?;
            }
            Some(_) => {}
        }
        tx.commit().await.map_err(schema)
    }

    /// Every row of `select` (name, JSON body), parsed.
    async fn objects(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        select: &'static str,
        kind: &str,
    ) -> Result<BTreeMap<String, Value>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(select)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| self.read(e))?;
        rows.into_iter()
            .map(|(name, body)| {
                let value = self.json(&body, || format!("{kind} {name:?}"))?;
                Ok((name, value))
            })
            .collect()
    }

    fn json(&self, text: &str, what: impl FnOnce() -> String) -> Result<Value, StoreError> {
        serde_json::from_str(text)
            .map_err(|e| self.damaged(format!("{} is not valid JSON: {e}", what())))
    }

    fn read(&self, source: sqlx::Error) -> StoreError {
        StoreError::Read {
            database: self.database.clone(),
            source,
        }
    }

    fn damaged(&self, detail: String) -> StoreError {
        StoreError::Damaged {
            database: self.database.clone(),
            detail,
        }
    }
}

/// Runs every change, then appends the history rows.
async fn write_all(
    tx: &mut Transaction<'static, Sqlite>,
    changes: &[Change],
    records: &[Record],
    time: &str,
) -> Result<(), sqlx::Error> {
    for change in changes {
        apply(tx, change).await?;
    }
    for record in records {
        sqlx::query(schema::APPEND_HISTORY)
            .bind(time)
            .bind(&record.action)
            .bind(&record.object)
            .bind(record.before.as_ref().map(Value::to_string))
            .bind(record.after.as_ref().map(Value::to_string))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn apply(tx: &mut Transaction<'static, Sqlite>, change: &Change) -> Result<(), sqlx::Error> {
    match change {
        Change::PutEnvironment { name, body } => {
            put(tx, schema::PUT_ENVIRONMENT, name, body).await?;
        }
        Change::DeleteEnvironment { name } => {
            run(tx, schema::UNDEPLOY_ENVIRONMENT, &[name]).await?;
            run(tx, schema::DELETE_ENVIRONMENT, &[name]).await?;
        }
        Change::PutProxy { name, body } => {
            put(tx, schema::PUT_PROXY, name, body).await?;
        }
        Change::DeleteProxy { name } => {
            run(tx, schema::UNDEPLOY_PROXY, &[name]).await?;
            run(tx, schema::DELETE_PROXY, &[name]).await?;
        }
        Change::PutConsumer { name, body } => {
            put(tx, schema::PUT_CONSUMER, name, body).await?;
        }
        Change::DeleteConsumer { name } => {
            run(tx, schema::DELETE_CONSUMER, &[name]).await?;
        }
        Change::PutUpstream { name, body } => {
            put(tx, schema::PUT_UPSTREAM, name, body).await?;
        }
        Change::DeleteUpstream { name } => {
            run(tx, schema::DELETE_UPSTREAM, &[name]).await?;
        }
        Change::Deploy { proxy, environment } => {
            run(tx, schema::DEPLOY, &[proxy, environment]).await?;
        }
        Change::Undeploy { proxy, environment } => {
            run(tx, schema::UNDEPLOY, &[proxy, environment]).await?;
        }
        Change::Replace { state } => {
            for statement in schema::CLEAR.iter().copied() {
                run(tx, statement, &[]).await?;
            }
            for (name, body) in &state.environments {
                put(tx, schema::PUT_ENVIRONMENT, name, body).await?;
            }
            for (name, body) in &state.proxies {
                put(tx, schema::PUT_PROXY, name, body).await?;
            }
            for (proxy, environment) in &state.deployments {
                run(tx, schema::DEPLOY, &[proxy, environment]).await?;
            }
            for (name, body) in &state.consumers {
                put(tx, schema::PUT_CONSUMER, name, body).await?;
            }
            for (name, body) in &state.upstreams {
                put(tx, schema::PUT_UPSTREAM, name, body).await?;
            }
        }
    }
    Ok(())
}

async fn put(
    tx: &mut Transaction<'static, Sqlite>,
    statement: &'static str,
    name: &str,
    body: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(statement)
        .bind(name)
        .bind(body.to_string())
        .execute(&mut **tx)
        .await
        .map(drop)
}

async fn run(
    tx: &mut Transaction<'static, Sqlite>,
    statement: &'static str,
    binds: &[&str],
) -> Result<(), sqlx::Error> {
    let mut query = sqlx::query(statement);
    for bind in binds {
        query = query.bind(*bind);
    }
    query.execute(&mut **tx).await.map(drop)
}

/// SQLite reads a name starting with `file:` as a URI; `./` keeps such a relative path a path.
fn literal_path(path: &Path) -> PathBuf {
    if path.is_relative() && path.to_string_lossy().starts_with("file:") {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    }
}
