use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::time::timeout;

use super::*;

/// Bounds every await on the database in these tests.
const LIMIT: Duration = Duration::from_secs(30);

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match timeout(LIMIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} took longer than {LIMIT:?}"),
    }
}

async fn open(path: &Path) -> Store {
    bounded("open", Store::open(path))
        .await
        .expect("the database opens")
}

async fn load(store: &Store) -> State {
    bounded("load", store.load())
        .await
        .expect("the state loads")
}

async fn commit(store: &Store, changes: &[Change], records: &[Record]) {
    bounded("commit", store.commit(changes, records))
        .await
        .expect("the commit is kept");
}

async fn history(store: &Store, offset: u64, limit: u64) -> (Vec<HistoryEntry>, u64) {
    bounded("history", store.history(offset, limit))
        .await
        .expect("the history reads")
}

fn env(name: &str, port: u16) -> Value {
    json!({"name": name, "listen": format!("127.0.0.1:{port}"), "websocket": true,
           "timeouts": {"connect": "2s"}})
}

fn proxy(name: &str, path: &str) -> Value {
    json!({"name": name, "path": path, "backend": "http://127.0.0.1:9000",
           "methods": ["GET", "POST"], "preserve_host": false})
}

fn put_env(name: &str, port: u16) -> Change {
    Change::PutEnvironment {
        name: name.into(),
        body: env(name, port),
    }
}

fn put_proxy(name: &str, path: &str) -> Change {
    Change::PutProxy {
        name: name.into(),
        body: proxy(name, path),
    }
}

fn deploy(proxy: &str, environment: &str) -> Change {
    Change::Deploy {
        proxy: proxy.into(),
        environment: environment.into(),
    }
}

fn record(action: &str, object: &str, before: Option<Value>, after: Option<Value>) -> Record {
    Record {
        action: action.into(),
        object: object.into(),
        before,
        after,
    }
}

fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(p, e)| ((*p).to_owned(), (*e).to_owned()))
        .collect()
}

/// Two environments, two proxies, three deployments.
async fn seeded(store: &Store) {
    commit(
        store,
        &[
            put_env("prod", 8080),
            put_env("staging", 8081),
            put_proxy("users", "/users"),
            put_proxy("orders", "/orders"),
            deploy("users", "prod"),
            deploy("users", "staging"),
            deploy("orders", "prod"),
        ],
        &[],
    )
    .await;
}

#[tokio::test]
async fn open_creates_a_missing_file_holding_an_empty_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strait.db");
    let store = open(&path).await;
    assert!(path.exists());
    assert_eq!(load(&store).await, State::default());
    assert_eq!(history(&store, 0, 10).await.1, 0);
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .expect("pragma");
    assert_eq!(journal, "wal");
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&store.pool)
        .await
        .expect("pragma");
    assert_eq!(synchronous, 2, "synchronous = FULL");
}

#[tokio::test]
async fn errors_name_the_database_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-dir").join("strait.db");
    let error = Store::open(&missing).await.expect_err("no directory");
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );

    let garbage = dir.path().join("notes.txt");
    std::fs::write(
        &garbage,
        "this is not a database, it is a text file of some length\n".repeat(200),
    )
    .expect("write");
    let error = Store::open(&garbage).await.expect_err("not a database");
    assert!(
        error.to_string().contains(&garbage.display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strait.db");
    let store = open(&path).await;
    sqlx::query("UPDATE schema_version SET version = 99")
        .execute(&store.pool)
        .await
        .expect("update");
    drop(store);
    let error = Store::open(&path).await.expect_err("newer schema");
    assert!(
        matches!(error, StoreError::NewerSchema { found: 99, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("strait.db"), "{error}");
}

#[tokio::test]
async fn reopening_keeps_one_schema_version_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strait.db");
    drop(open(&path).await);
    let store = open(&path).await;
    let rows: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_version")
        .fetch_all(&store.pool)
        .await
        .expect("select");
    assert_eq!(rows, vec![schema::CURRENT]);
}

#[tokio::test]
async fn every_change_kind_loads_back() {
    let store = bounded("memory", Store::memory()).await.expect("memory");
    seeded(&store).await;
    let state = load(&store).await;
    assert_eq!(state.environments.len(), 2);
    assert_eq!(state.environments["prod"], env("prod", 8080));
    assert_eq!(state.proxies["orders"], proxy("orders", "/orders"));
    assert_eq!(
        state.deployments,
        pairs(&[("orders", "prod"), ("users", "prod"), ("users", "staging")])
    );

    // Put replaces and keeps deployments.
    commit(
        &store,
        &[put_env("prod", 9090), put_proxy("users", "/v2/users")],
        &[],
    )
    .await;
    let state = load(&store).await;
    assert_eq!(state.environments["prod"], env("prod", 9090));
    assert_eq!(state.proxies["users"], proxy("users", "/v2/users"));
    assert_eq!(state.deployments.len(), 3);

    let undeploy = Change::Undeploy {
        proxy: "users".into(),
        environment: "staging".into(),
    };
    commit(&store, &[undeploy], &[]).await;
    assert_eq!(
        load(&store).await.deployments,
        pairs(&[("orders", "prod"), ("users", "prod")])
    );

    // Values of every JSON kind survive as they were.
    let odd = json!({"name": "odd", "n": 1.5, "big": u64::MAX, "none": null,
                     "text": "quote \" and ünïcode", "list": [true, false, {}]});
    commit(
        &store,
        &[Change::PutProxy {
            name: "odd".into(),
            body: odd.clone(),
        }],
        &[],
    )
    .await;
    assert_eq!(load(&store).await.proxies["odd"], odd);
}

#[tokio::test]
async fn deleting_an_environment_removes_its_deployments() {
    let store = Store::memory().await.expect("memory");
    seeded(&store).await;
    commit(
        &store,
        &[Change::DeleteEnvironment {
            name: "prod".into(),
        }],
        &[],
    )
    .await;
    let state = load(&store).await;
    assert_eq!(state.environments.keys().collect::<Vec<_>>(), ["staging"]);
    assert_eq!(state.proxies.len(), 2, "proxies stay");
    assert_eq!(state.deployments, pairs(&[("users", "staging")]));
}

#[tokio::test]
async fn deleting_a_proxy_removes_its_deployments() {
    let store = Store::memory().await.expect("memory");
    seeded(&store).await;
    commit(
        &store,
        &[Change::DeleteProxy {
            name: "users".into(),
        }],
        &[],
    )
    .await;
    let state = load(&store).await;
    assert_eq!(state.proxies.keys().collect::<Vec<_>>(), ["orders"]);
    assert_eq!(state.environments.len(), 2, "environments stay");
    assert_eq!(state.deployments, pairs(&[("orders", "prod")]));
}

#[tokio::test]
async fn deploying_twice_keeps_one_deployment() {
    let store = Store::memory().await.expect("memory");
    seeded(&store).await;
    commit(
        &store,
        &[deploy("users", "prod"), deploy("users", "prod")],
        &[],
    )
    .await;
    commit(&store, &[deploy("users", "prod")], &[]).await;
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deployments WHERE proxy = 'users' AND environment = 'prod'",
    )
    .fetch_one(&store.pool)
    .await
    .expect("count");
    assert_eq!(count, 1);
    assert_eq!(load(&store).await.deployments.len(), 3);
}

#[tokio::test]
async fn replace_swaps_everything_but_the_history() {
    let store = Store::memory().await.expect("memory");
    seeded(&store).await;
    commit(&store, &[], &[record("put", "x", None, None)]).await;
    let mut next = State::default();
    next.environments.insert("edge".into(), env("edge", 7000));
    next.proxies
        .insert("search".into(), proxy("search", "/search"));
    next.proxies.insert("users".into(), proxy("users", "/u"));
    next.deployments = pairs(&[("search", "edge")]);
    next.upstreams.insert(
        "pool".into(),
        json!({"name": "pool", "targets": ["http://a", {"url": "http://b", "weight": 2}]}),
    );
    commit(
        &store,
        &[Change::Replace {
            state: next.clone(),
        }],
        &[record("reload", "strait.yaml", None, None)],
    )
    .await;
    assert_eq!(load(&store).await, next);
    assert_eq!(history(&store, 0, 10).await.1, 2);

    commit(
        &store,
        &[Change::Replace {
            state: State::default(),
        }],
        &[],
    )
    .await;
    assert_eq!(load(&store).await, State::default());
}

#[tokio::test]
async fn history_is_newest_first_paged_and_counted() {
    let store = Store::memory().await.expect("memory");
    let started = time::rfc3339_millis(SystemTime::now());
    for i in 0..5 {
        commit(
            &store,
            &[put_env("prod", 8000 + i)],
            &[record(
                "put_environment",
                "environments/prod",
                (i > 0).then(|| env("prod", 8000 + i - 1)),
                Some(env("prod", 8000 + i)),
            )],
        )
        .await;
    }
    // Two records in one commit share its time.
    commit(
        &store,
        &[],
        &[
            record(
                "deploy",
                "proxies/a/deployments/prod",
                Some(json!([])),
                Some(json!(["prod"])),
            ),
            record(
                "undeploy",
                "proxies/a/deployments/prod",
                Some(json!(["prod"])),
                Some(json!([])),
            ),
        ],
    )
    .await;

    let (all, total) = history(&store, 0, 100).await;
    assert_eq!(total, 7);
    assert_eq!(all.len(), 7);
    let ids: Vec<u64> = all.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(all[0].action, "undeploy");
    assert_eq!(all[1].action, "deploy");
    assert_eq!(all[0].time, all[1].time);
    assert_eq!(all[1].before, Some(json!([])));
    let oldest = &all[6];
    assert_eq!(oldest.object, "environments/prod");
    assert_eq!(oldest.before, None, "a creation has no before");
    assert_eq!(oldest.after, Some(env("prod", 8000)));
    assert_eq!(all[5].before, Some(env("prod", 8000)));
    for entry in &all {
        // 2024-05-01T12:34:56.789Z
        assert_eq!(entry.time.len(), 24, "{}", entry.time);
        assert!(entry.time.ends_with('Z') && entry.time.as_bytes()[19] == b'.');
        assert!(entry.time >= started, "{} < {started}", entry.time);
    }

    let (page, total) = history(&store, 2, 3).await;
    assert_eq!(total, 7);
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), ids[2..5]);
    let (tail, _) = history(&store, 6, 3).await;
    assert_eq!(tail.len(), 1);
    let (past, total) = history(&store, 50, 3).await;
    assert!(past.is_empty());
    assert_eq!(total, 7);
    let (none, _) = history(&store, 0, 0).await;
    assert!(none.is_empty());
    let (huge, _) = history(&store, u64::MAX, u64::MAX).await;
    assert!(huge.is_empty());
}

#[tokio::test]
async fn reopening_restores_state_and_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strait.db");
    let store = open(&path).await;
    seeded(&store).await;
    commit(
        &store,
        &[Change::DeleteProxy {
            name: "orders".into(),
        }],
        &[record(
            "delete_proxy",
            "proxies/orders",
            Some(proxy("orders", "/orders")),
            None,
        )],
    )
    .await;
    let state = load(&store).await;
    let (entries, _) = history(&store, 0, 10).await;
    drop(store);

    let store = open(&path).await;
    assert_eq!(load(&store).await, state);
    let (again, total) = history(&store, 0, 10).await;
    assert_eq!(total, 1);
    assert_eq!(again[0].id, entries[0].id);
    assert_eq!(again[0].time, entries[0].time);
    assert_eq!(again[0].before, Some(proxy("orders", "/orders")));

    commit(&store, &[], &[record("x", "y", None, None)]).await;
    let (newer, _) = history(&store, 0, 1).await;
    assert!(
        newer[0].id > entries[0].id,
        "ids keep increasing after a reopen"
    );
}

/// A statement failing late in a commit must leave neither the changes nor the history.
#[tokio::test]
async fn a_failing_commit_keeps_nothing() {
    let store = Store::memory().await.expect("memory");
    seeded(&store).await;
    let before = load(&store).await;
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON history WHEN NEW.action = 'refused' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&store.pool)
    .await
    .expect("trigger");
    sqlx::query(
        "CREATE TRIGGER refuse_proxy BEFORE INSERT ON proxies WHEN NEW.name = 'refused' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&store.pool)
    .await
    .expect("trigger");

    // Changes run, then the second history row fails.
    let error = store
        .commit(
            &[
                put_env("edge", 7000),
                Change::DeleteProxy {
                    name: "users".into(),
                },
            ],
            &[
                record("ok", "a", None, None),
                record("refused", "b", None, None),
            ],
        )
        .await
        .expect_err("the trigger refuses");
    assert!(matches!(error, StoreError::Write { .. }), "{error:?}");
    assert!(error.to_string().contains(":memory:"), "{error}");
    assert!(error.to_string().contains("refused by the test"), "{error}");
    assert_eq!(load(&store).await, before);
    assert_eq!(history(&store, 0, 10).await.1, 0);

    // A replace failing after it emptied the tables.
    let mut next = State::default();
    next.proxies
        .insert("refused".into(), proxy("refused", "/r"));
    let error = store
        .commit(&[Change::Replace { state: next }], &[])
        .await
        .expect_err("the trigger refuses");
    assert!(matches!(error, StoreError::Write { .. }), "{error:?}");
    assert_eq!(load(&store).await, before);

    // The store still takes writes afterwards.
    commit(
        &store,
        &[put_env("edge", 7000)],
        &[record("ok", "a", None, None)],
    )
    .await;
    assert_eq!(load(&store).await.environments.len(), 3);
}

#[tokio::test]
async fn bodies_that_are_not_json_are_reported_as_damage() {
    let store = Store::memory().await.expect("memory");
    sqlx::query("INSERT INTO proxies (name, body) VALUES ('users', '{not json')")
        .execute(&store.pool)
        .await
        .expect("insert");
    let error = store.load().await.expect_err("not JSON");
    assert!(matches!(error, StoreError::Damaged { .. }), "{error:?}");
    assert!(error.to_string().contains("proxy \"users\""), "{error}");
}

/// Many concurrent users of the in-memory store see one database, not one per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_memory_store_is_one_database() {
    let store = std::sync::Arc::new(Store::memory().await.expect("memory"));
    let mut tasks = Vec::new();
    for i in 0..20u16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("env{i}");
            commit(
                &store,
                &[put_env(&name, 7000 + i)],
                &[record("put", &name, None, None)],
            )
            .await;
            load(&store).await.environments.contains_key(&name)
        }));
    }
    for task in tasks {
        assert!(
            task.await.expect("task"),
            "a write is visible to the next read"
        );
    }
    assert_eq!(load(&store).await.environments.len(), 20);
    assert_eq!(history(&store, 0, 100).await.1, 20);
    // Idle time does not retire the only connection (and with it the data).
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(load(&store).await.environments.len(), 20);
}

#[tokio::test]
async fn an_empty_commit_writes_nothing() {
    let store = Store::memory().await.expect("memory");
    commit(&store, &[], &[]).await;
    assert_eq!(history(&store, 0, 10).await.1, 0);
}

#[test]
fn a_relative_path_that_looks_like_a_uri_stays_a_path() {
    assert_eq!(
        literal_path(Path::new("file:x.db")),
        Path::new("./file:x.db")
    );
    assert_eq!(literal_path(Path::new("data/x.db")), Path::new("data/x.db"));
    assert_eq!(literal_path(Path::new("/var/x.db")), Path::new("/var/x.db"));
}

// --- Crash safety -------------------------------------------------------------------------

/// Set to a database path, it makes `crash_writer` write until it is killed.
const WRITER_ENV: &str = "STRAIT_STORE_CRASH_WRITER";
/// Commits the parent waits to see reported before it kills the writer.
const REPORTED_BEFORE_KILL: u64 = 40;
/// How long the writer may take to report them.
const WRITER_LIMIT: Duration = Duration::from_secs(60);

/// The child half of `a_writer_killed_mid_burst_leaves_a_working_database`: a no-op in an
/// ordinary test run. With `WRITER_ENV` set it commits in a tight loop, printing
/// `committed N` after commit N returned, until it is killed (or, orphaned, gives up after
/// a while). Commit N puts proxy `p` with `n: N`, appends history row N and deploys `p` to
/// `prod` when N is even, undeploys it when odd.
#[tokio::test]
async fn crash_writer() {
    let Some(path) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let store = open(Path::new(&path)).await;
    commit(&store, &[put_env("prod", 8080)], &[]).await;
    let filler = "x".repeat(64 * 1024);
    let started = Instant::now();
    for n in 1u64.. {
        if started.elapsed() > WRITER_LIMIT * 2 {
            break;
        }
        let toggle = if n % 2 == 0 {
            deploy("p", "prod")
        } else {
            Change::Undeploy {
                proxy: "p".into(),
                environment: "prod".into(),
            }
        };
        let body = json!({"name": "p", "n": n, "filler": filler});
        commit(
            &store,
            &[
                Change::PutProxy {
                    name: "p".into(),
                    body: body.clone(),
                },
                toggle,
            ],
            &[record("put_proxy", "proxies/p", None, Some(body))],
        )
        .await;
        println!("committed {n}");
    }
}

/// The name libtest knows `crash_writer` by (`store::tests::crash_writer`).
fn writer_test_name() -> String {
    let module = module_path!();
    let within_crate = module.split_once("::").map_or(module, |(_, rest)| rest);
    format!("{within_crate}::crash_writer")
}

/// Kills the child if the test gives up early.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the writer until it reported `want` commits, SIGKILLs it, and returns the highest
/// commit it reported.
fn run_and_kill_writer(path: &Path, stderr: &Path, want: u64) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| format!("no test binary: {e}"))?;
    let stderr_file = std::fs::File::create(stderr).map_err(|e| e.to_string())?;
    let mut child = KillOnDrop(
        Command::new(exe)
            .args([
                writer_test_name().as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr_file)
            .spawn()
            .map_err(|e| format!("cannot start the writer: {e}"))?,
    );
    let stdout = child.0.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        // Reads to the end so the writer never blocks on a full pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("committed ").and_then(|n| n.parse().ok()) {
                let _ = tx.send(n);
            }
        }
    });
    let deadline = Instant::now() + WRITER_LIMIT;
    let mut reported = 0;
    let mut first = None;
    while reported < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(n) => {
                reported = n;
                first.get_or_insert((n, Instant::now()));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "the writer reported {reported} commits in {WRITER_LIMIT:?}"
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("the writer stopped after {reported} commits"));
            }
        }
    }
    // The reports are the synchronisation: the writer is now inside its next commit. A
    // random pause of up to two commits' time then spreads the kill over every phase of a
    // commit (statements, WAL append, fsync, between commits) from one run to the next.
    if let Some((n, at)) = first {
        let commits = u32::try_from(reported.saturating_sub(n).max(1)).unwrap_or(u32::MAX);
        let per_commit = at.elapsed() / commits;
        let random = RandomState::new().hash_one(reported) % 1000;
        let permille = u32::try_from(random).unwrap_or(0);
        std::thread::sleep(per_commit * 2 * permille / 1000);
    }
    child
        .0
        .kill()
        .map_err(|e| format!("cannot kill the writer: {e}"))?;
    let status = child.0.wait().map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() != Some(9) {
            return Err(format!(
                "the writer ended by itself ({status}), not by SIGKILL"
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = status;
    reader.join().map_err(|_| "the reader panicked")?;
    Ok(rx.try_iter().fold(reported, u64::max))
}

#[tokio::test]
async fn a_writer_killed_mid_burst_leaves_a_working_database() {
    if std::env::var_os(WRITER_ENV).is_some() {
        return; // This process is the writer.
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.db");
    let stderr = dir.path().join("writer.stderr");
    let run = {
        let (path, stderr) = (path.clone(), stderr.clone());
        tokio::task::spawn_blocking(move || {
            run_and_kill_writer(&path, &stderr, REPORTED_BEFORE_KILL)
        })
    };
    let reported = match run.await.expect("join") {
        Ok(reported) => reported,
        Err(error) => panic!(
            "{error}; the writer said:\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        ),
    };
    assert!(reported >= REPORTED_BEFORE_KILL);

    let store = open(&path).await;
    let state = load(&store).await;
    let kept = state.proxies["p"]["n"].as_u64().expect("n");
    // Every reported commit survived; at most the one in flight went further.
    assert!(
        (reported..=reported + 1).contains(&kept),
        "reported {reported}, kept {kept}"
    );
    // Commits are whole: the history, the proxy and the deployment agree.
    let (newest, total) = history(&store, 0, 1).await;
    assert_eq!(total, kept, "one history row per commit");
    assert_eq!(
        newest[0].after.as_ref().and_then(|a| a["n"].as_u64()),
        Some(kept)
    );
    let deployed = state
        .deployments
        .contains(&("p".to_owned(), "prod".to_owned()));
    assert_eq!(deployed, kept % 2 == 0);

    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&store.pool)
        .await
        .expect("integrity_check");
    assert_eq!(integrity, "ok");

    commit(
        &store,
        &[put_proxy("after", "/after")],
        &[record("put_proxy", "proxies/after", None, None)],
    )
    .await;
    assert!(load(&store).await.proxies.contains_key("after"));
    assert_eq!(history(&store, 0, 1).await.1, kept + 1);
}

#[tokio::test]
async fn consumers_are_kept_replaced_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strait.db");
    let store = open(&path).await;
    let alice = json!({"name": "alice", "groups": ["admins"],
        "credentials": {"api_key_digests": [format!("sha256:{}", "a".repeat(64))]}});
    let put = |name: &str, body: &Value| Change::PutConsumer {
        name: name.into(),
        body: body.clone(),
    };
    commit(
        &store,
        &[put("alice", &alice), put("bob", &json!({"name": "bob"}))],
        &[],
    )
    .await;
    drop(store);
    let store = open(&path).await;
    let state = load(&store).await;
    assert_eq!(state.consumers.len(), 2);
    assert_eq!(state.consumers["alice"], alice, "kept exactly as given");

    commit(
        &store,
        &[Change::DeleteConsumer { name: "bob".into() }],
        &[],
    )
    .await;
    assert_eq!(
        load(&store).await.consumers.keys().collect::<Vec<_>>(),
        ["alice"]
    );

    let mut next = State::default();
    next.consumers
        .insert("carol".into(), json!({"name": "carol"}));
    commit(
        &store,
        &[Change::Replace {
            state: next.clone(),
        }],
        &[],
    )
    .await;
    assert_eq!(
        load(&store).await,
        next,
        "a replace swaps the consumers too"
    );
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strait.db");
    let store = open(&path).await;
    commit(&store, &[put_env("prod", 8080)], &[]).await;
    for statement in [
        "DROP TABLE consumers",
        "UPDATE schema_version SET version = 1",
    ] {
        sqlx::query(statement)
            .execute(&store.pool)
            .await
            .expect("make it a version 1 database");
    }
    drop(store);
    let store = open(&path).await;
    let rows: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_version")
        .fetch_all(&store.pool)
        .await
        .expect("select");
    assert_eq!(rows, vec![schema::CURRENT]);
    let state = load(&store).await;
    assert_eq!(state.environments["prod"], env("prod", 8080));
    assert!(state.consumers.is_empty());
}

#[tokio::test]
async fn a_version_2_database_gains_the_upstreams_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strait.db");
    let store = open(&path).await;
    commit(&store, &[put_env("prod", 8080)], &[]).await;
    for statement in [
        "DROP TABLE upstreams",
        "UPDATE schema_version SET version = 2",
    ] {
        sqlx::query(statement)
            .execute(&store.pool)
            .await
            .expect("make it a version 2 database");
    }
    drop(store);
    let store = open(&path).await;
    let state = load(&store).await;
    assert_eq!(state.environments["prod"], env("prod", 8080));
    assert!(state.upstreams.is_empty());
}

#[tokio::test]
async fn upstreams_are_kept_replaced_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strait.db");
    let store = open(&path).await;
    let pool = json!({"name": "pool", "targets": ["http://a", "http://b"], "retries": 1});
    let put = |name: &str, body: &Value| Change::PutUpstream {
        name: name.into(),
        body: body.clone(),
    };
    commit(
        &store,
        &[
            put("pool", &pool),
            put("other", &json!({"name": "other", "targets": ["http://c"]})),
        ],
        &[],
    )
    .await;
    let replaced = json!({"name": "pool", "targets": ["http://b"]});
    commit(&store, &[put("pool", &replaced)], &[]).await;
    drop(store);
    let store = open(&path).await;
    let state = load(&store).await;
    assert_eq!(state.upstreams.len(), 2);
    assert_eq!(state.upstreams["pool"], replaced, "the replacement is kept");

    commit(
        &store,
        &[Change::DeleteUpstream {
            name: "other".into(),
        }],
        &[],
    )
    .await;
    assert_eq!(
        load(&store).await.upstreams.keys().collect::<Vec<_>>(),
        ["pool"]
    );
}
