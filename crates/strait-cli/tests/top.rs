//! End-to-end test of `strait top` in a pseudo-terminal: a real gateway (child process) in
//! front of the echo backend with two open WebSocket sessions, and `strait top --admin URL`
//! on a 120x40 pty whose output a vt100 parser turns into a screen. The test reads what a
//! person would see, quits with `q` and checks the exit status and the restored terminal.
//!
//! The rates need the gateway's `/metrics`; the test asserts only on what the admin API
//! gives without it (proxies and the open sessions), so it passes with and without.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use portable_pty::{ChildKiller, CommandBuilder, ExitStatus, PtySize, native_pty_system};
use tokio_tungstenite::MaybeTlsStream;

use common::{Ready, Running, Ws, free_addr, start_echo, start_ready, strait, ws_connect};

const ROWS: u16 = 40;
const COLUMNS: u16 = 120;
/// How long the screen may take to show the sessions, and `strait top` to exit after `q`.
const SCREEN_WAIT: Duration = Duration::from_secs(15);
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// The proxy's name: distinctive, so finding it on screen means the proxies table.
const PROXY: &str = "chatroom";
const SESSIONS: usize = 2;

/// `strait top` running in a pseudo-terminal, its output read by a thread.
struct Top {
    output: mpsc::Receiver<Vec<u8>>,
    screen: vt100::Parser,
    keyboard: Box<dyn Write + Send>,
    exited: mpsc::Receiver<std::io::Result<ExitStatus>>,
    /// Until it exited: kills it if the test fails first.
    killer: Option<Box<dyn ChildKiller + Send + Sync>>,
    /// Kept open until the test is done: closing it hangs the terminal up.
    _master: Box<dyn portable_pty::MasterPty + Send>,
}

impl Top {
    fn start(admin: &str) -> Top {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLUMNS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pseudo-terminal");
        let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_strait"));
        command.args(["top", "--admin", admin]);
        command.env("TERM", "xterm-256color");
        command.env_remove("STRAIT_ADMIN_TOKEN");
        command.env_remove("RUST_LOG");
        command.cwd(env!("CARGO_MANIFEST_DIR"));
        let mut child = pty.slave.spawn_command(command).expect("strait top starts");
        // Only the child holds the terminal's slave side now, so reads end when it exits.
        drop(pty.slave);
        let killer = child.clone_killer();
        let (exit_sender, exited) = mpsc::channel();
        std::thread::spawn(move || exit_sender.send(child.wait()));
        let mut reader = pty.master.try_clone_reader().expect("the pty's reader");
        let (sender, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                if sender.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let size = |n| NonZeroU16::new(n).expect("a size");
        Top {
            output,
            screen: vt100::Parser::new(size(ROWS), size(COLUMNS), 0),
            keyboard: pty.master.take_writer().expect("the pty's writer"),
            exited,
            killer: Some(killer),
            _master: pty.master,
        }
    }

    fn contents(&self) -> String {
        self.screen.screen().contents()
    }

    /// Feeds the output to the screen until `done` holds for its contents; fails the test
    /// with the screen after [`SCREEN_WAIT`].
    fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_WAIT;
        loop {
            let contents = self.contents();
            if done(&contents) {
                return contents;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.screen.process(&bytes),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no {what} within {SCREEN_WAIT:?}; the screen:\n{contents}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("strait top exited before showing {what}; the screen:\n{contents}")
                }
            }
        }
    }

    fn press(&mut self, key: &str) {
        self.keyboard.write_all(key.as_bytes()).expect("type");
        self.keyboard.flush().expect("flush the keyboard");
    }

    /// Its exit status within [`EXIT_WAIT`], with the rest of its output on the screen.
    fn exit(&mut self) -> ExitStatus {
        let status = match self.exited.recv_timeout(EXIT_WAIT) {
            Ok(status) => status.expect("wait for strait top"),
            Err(_) => panic!(
                "strait top did not exit within {EXIT_WAIT:?}; the screen:\n{}",
                self.contents()
            ),
        };
        self.killer = None;
        let deadline = Instant::now() + EXIT_WAIT;
        let left = || deadline.saturating_duration_since(Instant::now());
        while let Ok(bytes) = self.output.recv_timeout(left()) {
            self.screen.process(&bytes);
        }
        status
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        // On a failure, no process is left behind.
        if let Some(mut killer) = self.killer.take() {
            let _ = killer.kill();
        }
    }
}

/// The number after `active WS ` in the header line.
fn active_sessions(screen: &str) -> Option<u64> {
    let (_, rest) = screen.lines().next()?.split_once("active WS ")?;
    rest.split_whitespace().next()?.parse().ok()
}

fn local_addr(ws: &Ws) -> SocketAddr {
    match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("the session's address"),
        _ => panic!("a plain TCP session"),
    }
}

#[tokio::test]
async fn top_shows_the_proxies_and_the_open_sessions_and_quits_on_q() {
    let (mut echo, echo_addr) = start_echo().await;
    let dir = common::temporary_folder();
    let config = dir.path().join("gateway.yaml");
    let (mut gateway, (listen, admin)) = start_ready(
        "strait run --config --admin",
        || {
            let (listen, admin) = (free_addr(), free_addr());
            let yaml = format!(
                "environments:\n  - name: test\n    listen: {listen}\n    websocket: true\n    shutdown_grace: 5s\n\
                 proxies:\n  - name: {PROXY}\n    path: /chat/*\n    backend: http://{echo_addr}/echo\n    deploy: [test]\n"
            );
            std::fs::write(&config, yaml).expect("write the configuration");
            let child = Running::spawn(
                "strait run --config --admin",
                strait()
                    .args(["--log-level", "info", "run", "--config"])
                    .arg(&config)
                    .args(["--admin", &admin.to_string()]),
            );
            (child, (listen, admin))
        },
        |(listen, admin)| vec![Ready::Environment(listen), Ready::Admin(admin)],
    )
    .await;
    let mut sessions = Vec::new();
    for n in 0..SESSIONS {
        let mut ws = ws_connect(&format!("ws://{listen}/chat/room")).await;
        common::ws_round_trip(&mut ws, &format!("hello {n}")).await;
        sessions.push(ws);
    }
    let clients: Vec<String> = sessions
        .iter()
        .map(|ws| local_addr(ws).to_string())
        .collect();

    let url = format!("http://{admin}");
    let admin_url = url.clone();
    let (screen, status, alternate) = tokio::task::spawn_blocking(move || {
        let mut top = Top::start(&admin_url);
        let screen = top.wait_for("proxy and sessions", |screen| {
            screen.contains(PROXY)
                && active_sessions(screen) == Some(SESSIONS as u64)
                && clients
                    .iter()
                    .all(|client| screen.contains(client.as_str()))
        });
        top.press("q");
        let status = top.exit();
        (screen, status, top.screen.screen().alternate_screen())
    })
    .await
    .expect("the pty thread");

    let header = screen.lines().next().unwrap_or_default();
    assert!(
        header.contains(&url),
        "the header names the admin API:\n{screen}"
    );
    let proxy_rows: Vec<&str> = screen
        .lines()
        .filter(|line| line.contains(PROXY) && line.contains("/chat/*"))
        .collect();
    assert_eq!(
        proxy_rows.len(),
        1,
        "one proxy row with its path:\n{screen}"
    );
    let session_rows = screen
        .lines()
        .filter(|line| line.contains(PROXY) && line.contains("127.0.0.1:"))
        .count();
    assert_eq!(
        session_rows, SESSIONS,
        "one row per open session:\n{screen}"
    );
    assert!(
        status.success(),
        "strait top exits 0 on q: {status:?}\n{screen}"
    );
    assert!(
        !alternate,
        "the terminal left the alternate screen:\n{screen}"
    );

    drop(sessions);
    gateway.stop().await;
    echo.stop().await;
}
