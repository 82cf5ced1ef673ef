//! `strait top`: a live terminal view of a running gateway through its admin API, refreshed
//! every second. A task fetches, a thread reads the keyboard, and the loop here draws;
//! [`model`] turns answers into rows and [`view`] draws them.

mod model;
mod view;

use std::future::Future;
use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use strait::admin::{AdminClient, ClientError};
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, interval, timeout};

use model::{CONNECTIONS_PER_PAGE, ConnectionPage, Fetched, Model};

/// How often the view refreshes.
const REFRESH: Duration = Duration::from_secs(1);
/// How long one refresh may wait for the admin API.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// Shows the gateway behind `admin` until q, Esc or Ctrl-C, or until `stop` (SIGTERM/SIGINT).
pub async fn run(admin: &str, stop: impl Future<Output = ()>) -> ExitCode {
    let client = match AdminClient::new(admin, std::env::var("STRAIT_ADMIN_TOKEN").ok()) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match Tty::open() {
        Ok(mut tty) => show(&mut tty.0, client, admin, stop).await,
        Err(error) => Err(error),
    };
    // The terminal is restored by now (Tty's drop), so the error is readable.
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: strait top: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The terminal in raw mode on the alternate screen; restored when dropped, on every way
/// out. (ratatui's panic hook restores it on a panic, too.)
struct Tty(DefaultTerminal);

impl Tty {
    fn open() -> io::Result<Tty> {
        ratatui::try_init().map(Tty).map_err(|error| {
            ratatui::restore();
            io::Error::new(error.kind(), format!("cannot set up the terminal: {error}"))
        })
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

async fn show(
    terminal: &mut DefaultTerminal,
    client: AdminClient,
    admin: &str,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let started = Instant::now();
    let (sender, mut refreshes) = mpsc::channel(1);
    let poller = tokio::spawn(poll(client, started, sender));
    let mut keys = keyboard();
    let mut model = Model::default();
    let mut redraw = interval(REFRESH);
    let mut stop = std::pin::pin!(stop);
    let outcome = loop {
        let screen = model.screen(unix_now());
        if let Err(error) =
            terminal.draw(|frame| view::draw(frame, &screen, admin, started.elapsed()))
        {
            break Err(error);
        }
        tokio::select! {
            () = &mut stop => break Ok(()),
            Some((at, fetched)) = refreshes.recv() => model.update(fetched, at),
            key = keys.recv() => match key {
                Some(Ok(Event::Key(key))) if quits(key) => break Ok(()),
                Some(Ok(_)) => {}
                Some(Err(error)) => break Err(error),
                None => break Err(io::Error::other("the keyboard reader stopped")),
            },
            _ = redraw.tick() => {}
        }
    };
    poller.abort();
    outcome
}

fn quits(key: KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

/// Terminal events from a thread (crossterm reads block); it ends with the receiver.
fn keyboard() -> mpsc::UnboundedReceiver<io::Result<Event>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while !sender.is_closed() {
            let event = match event::poll(Duration::from_millis(200)) {
                Ok(false) => continue,
                Ok(true) => event::read(),
                Err(error) => Err(error),
            };
            let failed = event.is_err();
            if sender.send(event).is_err() || failed {
                return;
            }
        }
    });
    receiver
}

/// Fetches every second and sends each refresh with its time (seconds since `started`).
async fn poll(client: AdminClient, started: Instant, sender: mpsc::Sender<(f64, Fetched)>) {
    let mut tick = interval(REFRESH);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let at = started.elapsed().as_secs_f64();
        if sender.send((at, fetch(&client).await)).await.is_err() {
            return;
        }
    }
}

/// The state, the busiest page of connections and the metrics, fetched together.
async fn fetch(client: &AdminClient) -> Fetched {
    let connections = format!("/connections?per_page={CONNECTIONS_PER_PAGE}");
    let (state, connections, metrics) = tokio::join!(
        timeout(FETCH_TIMEOUT, client.state()),
        timeout(FETCH_TIMEOUT, client.call(Method::GET, &connections, None)),
        timeout(FETCH_TIMEOUT, client.call(Method::GET, "/metrics", None)),
    );
    let late = || format!("the admin API did not answer within {FETCH_TIMEOUT:?}");
    let failed = |error: ClientError| error.to_string();
    Fetched {
        state: state.map_err(|_| late()).and_then(|s| s.map_err(failed)),
        connections: connections
            .map_err(|_| late())
            .and_then(|c| c.map_err(failed))
            .and_then(|body| {
                serde_json::from_slice::<ConnectionPage>(&body)
                    .map_err(|e| format!("/connections did not answer the expected JSON: {e}"))
            }),
        metrics: match metrics {
            Ok(Ok(body)) => Ok(Some(String::from_utf8_lossy(&body).into_owned())),
            Ok(Err(ClientError::Refused { status, .. })) if status == StatusCode::NOT_FOUND => {
                Ok(None)
            }
            Ok(Err(error)) => Err(failed(error)),
            Err(_) => Err(late()),
        },
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
