//! The schema and every statement. Binds are `$n` and conflicts use `ON CONFLICT`, which
//! SQLite and PostgreSQL both accept; only `TABLES` (the id column) and `BEGIN_WRITE`
//! are SQLite's own.

/// The schema version this code writes and reads.
/// Version 2 added the `consumers` table, version 3 the `upstreams` table (each created on
/// open; nothing else changed).
pub(super) const CURRENT: i64 = 3;

/// Run in order when a database is opened; each is a no-op when the table exists.
pub(super) const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS environments (name TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS proxies (name TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL)",
    // Bodies hold only hashed credentials: the control plane seals them before writing.
    "CREATE TABLE IF NOT EXISTS consumers (name TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS upstreams (name TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS deployments (\
        proxy TEXT NOT NULL, \
        environment TEXT NOT NULL, \
        PRIMARY KEY (proxy, environment))",
    "CREATE INDEX IF NOT EXISTS deployments_by_environment ON deployments (environment)",
    // AUTOINCREMENT: ids are never reused, so they increase for as long as the file lives.
    "CREATE TABLE IF NOT EXISTS history (\
        id INTEGER PRIMARY KEY AUTOINCREMENT, \
        time TEXT NOT NULL, \
        action TEXT NOT NULL, \
        object TEXT NOT NULL, \
        before_json TEXT, \
        after_json TEXT)",
];

/// Starts a write transaction holding the write lock from its first statement.
pub(super) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

pub(super) const VERSION: &str = "SELECT MAX(version) FROM schema_version";
pub(super) const SET_VERSION: &str = "INSERT INTO schema_version (version) VALUES ($1)";
pub(super) const UPGRADE_VERSION: &str = "UPDATE schema_version SET version = $1";

pub(super) const ENVIRONMENTS: &str = "SELECT name, body FROM environments ORDER BY name";
pub(super) const PROXIES: &str = "SELECT name, body FROM proxies ORDER BY name";
pub(super) const CONSUMERS: &str = "SELECT name, body FROM consumers ORDER BY name";
pub(super) const UPSTREAMS: &str = "SELECT name, body FROM upstreams ORDER BY name";
pub(super) const DEPLOYMENTS: &str =
    "SELECT proxy, environment FROM deployments ORDER BY proxy, environment";

pub(super) const PUT_ENVIRONMENT: &str = "INSERT INTO environments (name, body) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET body = excluded.body";
pub(super) const DELETE_ENVIRONMENT: &str = "DELETE FROM environments WHERE name = $1";
pub(super) const PUT_PROXY: &str = "INSERT INTO proxies (name, body) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET body = excluded.body";
pub(super) const DELETE_PROXY: &str = "DELETE FROM proxies WHERE name = $1";
pub(super) const PUT_CONSUMER: &str = "INSERT INTO consumers (name, body) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET body = excluded.body";
pub(super) const DELETE_CONSUMER: &str = "DELETE FROM consumers WHERE name = $1";
pub(super) const PUT_UPSTREAM: &str = "INSERT INTO upstreams (name, body) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET body = excluded.body";
pub(super) const DELETE_UPSTREAM: &str = "DELETE FROM upstreams WHERE name = $1";

/// Idempotent: deploying twice keeps one row.
pub(super) const DEPLOY: &str =
    "INSERT INTO deployments (proxy, environment) VALUES ($1, $2) ON CONFLICT DO NOTHING";
pub(super) const UNDEPLOY: &str = "DELETE FROM deployments WHERE proxy = $1 AND environment = $2";
pub(super) const UNDEPLOY_PROXY: &str = "DELETE FROM deployments WHERE proxy = $1";
pub(super) const UNDEPLOY_ENVIRONMENT: &str = "DELETE FROM deployments WHERE environment = $1";
/// Empties the state (not the history).
pub(super) const CLEAR: &[&str] = &[
    "DELETE FROM deployments",
    "DELETE FROM proxies",
    "DELETE FROM environments",
    "DELETE FROM consumers",
    "DELETE FROM upstreams",
];

pub(super) const APPEND_HISTORY: &str = "INSERT INTO history \
     (time, action, object, before_json, after_json) VALUES ($1, $2, $3, $4, $5)";
pub(super) const HISTORY_COUNT: &str = "SELECT COUNT(*) FROM history";
pub(super) const HISTORY_PAGE: &str = "SELECT id, time, action, object, before_json, after_json \
     FROM history ORDER BY id DESC LIMIT $1 OFFSET $2";
