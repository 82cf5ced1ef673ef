//! `strait`: the command line. Thin: parsing arguments, logging and signals live here;
//! everything else is in the `strait` library.

// The engineering standard, checked by clippy: nothing that may panic on what the gateway
// reads (requests, frames, configuration). Tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod alloc;
mod top;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use std::sync::Arc;
use std::time::Duration;
use strait::config::{self, ConfigError};

use strait::admin::{AdminClient, AdminListener, AdminServer, apply_file};
use strait::control::Control;
use strait::telemetry::access::Destination;
use strait::{Gateway, GatewayHandle, GatewayOptions, echo};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// `strait --version`: a profile-guided build (scripts/pgo.sh sets `STRAIT_PGO`) says so, so
/// a benchmark report names the build it measured.
const VERSION: &str = match option_env!("STRAIT_PGO") {
    Some(_) => concat!(env!("CARGO_PKG_VERSION"), " (profile-guided build)"),
    None => env!("CARGO_PKG_VERSION"),
};

#[derive(Parser)]
#[command(
    name = "strait",
    version = VERSION,
    about = "An API gateway for HTTP and WebSocket traffic"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace; release builds stop at debug); `RUST_LOG`
    /// takes precedence.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a configuration file (declarative) or a database edited through the admin API (stateful).
    Run {
        /// The YAML file is the source of truth; reloaded on SIGHUP and when it changes.
        #[arg(long, short, required_unless_present = "data", conflicts_with = "data")]
        config: Option<PathBuf>,
        /// SQLite database holding the state (created if missing); edit it through the admin API.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Admin API address (default: `admin.listen` in the file; 127.0.0.1:8001 with --data).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// A name server for backend host names (`IP` or `IP:PORT`, port 53 by default)
        /// instead of those in /etc/resolv.conf; repeat for several.
        #[arg(long = "dns-server", value_name = "ADDR", value_parser = dns_server)]
        dns_servers: Vec<SocketAddr>,
        /// Threads serving client connections, each on its own single-threaded runtime
        /// (default: one per CPU); 0 serves them on the shared work-stealing runtime.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(..=1024))]
        workers: Option<u16>,
        /// `auto`: each worker thread is bound to a CPU of its own when the workers are as
        /// many as the CPUs this process may run on (as by default); `off`: the kernel's
        /// scheduler places them.
        #[arg(long, value_name = "MODE", default_value = "auto")]
        worker_cpu_affinity: Affinity,
    },
    /// Make a stateful gateway match a configuration file (prints the plan, then applies it).
    Apply {
        file: PathBuf,
        /// The admin API, e.g. http://127.0.0.1:8001 (token from STRAIT_ADMIN_TOKEN).
        #[arg(long)]
        admin: String,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a gateway's state as a configuration file.
    Dump {
        #[arg(long)]
        admin: String,
    },
    /// A live view of a running gateway, like top: proxies, request rates, WebSocket sessions.
    Top {
        /// The admin API, e.g. http://127.0.0.1:8001 (token from STRAIT_ADMIN_TOKEN).
        #[arg(long)]
        admin: String,
    },
    /// Check a configuration file like `nginx -t`: exit 0, or 1 listing every problem.
    Validate { file: PathBuf },
    /// Run the built-in echo backend.
    Echo {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: SocketAddr,
    },
    /// Start a gateway in front of the built-in echo backend, ready to try with curl.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the echo backend listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        backend: SocketAddr,
    },
}

/// mimalloc instead of glibc's malloc: a WebSocket session set-up makes ~65 small
/// allocations (tasks, hyper connections, headers), and glibc spent ~17 % of its instructions
/// in malloc/free (`scripts/callgrind.sh connect`).
#[global_allocator]
static ALLOCATOR: alloc::Mimalloc = alloc::Mimalloc;

fn main() -> ExitCode {
    alloc::no_huge_pages();
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match cli.command {
        Command::Validate { file } => validate(&file),
        command => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async move {
                // Installed before anything listens, so a SIGTERM right after the
                // "listening" line still shuts down gracefully.
                let signals = match Signals::install() {
                    Ok(signals) => signals,
                    Err(error) => {
                        eprintln!("error: cannot install signal handlers: {error}");
                        return ExitCode::FAILURE;
                    }
                };
                match command {
                    Command::Run {
                        config: Some(config),
                        admin,
                        dns_servers,
                        workers,
                        worker_cpu_affinity,
                        ..
                    } => {
                        let options = gateway_options(dns_servers, workers, worker_cpu_affinity);
                        run(&config, admin, options, signals).await
                    }
                    Command::Run {
                        data: Some(data),
                        admin,
                        dns_servers,
                        workers,
                        worker_cpu_affinity,
                        ..
                    } => {
                        let options = gateway_options(dns_servers, workers, worker_cpu_affinity);
                        run_stateful(&data, admin, options, signals).await
                    }
                    Command::Run { .. } => ExitCode::FAILURE,
                    Command::Apply {
                        file,
                        admin,
                        dry_run,
                    } => apply(&file, &admin, dry_run).await,
                    Command::Dump { admin } => dump(&admin).await,
                    Command::Top { admin } => {
                        let mut signals = signals;
                        // A terminal program also ends when its terminal hangs up.
                        let stop = async move {
                            tokio::select! {
                                _ = signals.term.recv() => {}
                                _ = signals.int.recv() => {}
                                _ = signals.hup.recv() => {}
                            }
                        };
                        top::run(&admin, stop).await
                    }
                    Command::Echo { listen } => run_echo(listen, signals).await,
                    Command::Demo { listen, backend } => demo(listen, backend, signals).await,
                    Command::Validate { .. } => ExitCode::SUCCESS,
                }
            })
        }
    }
}

/// Raises the descriptor soft limit to the hard limit and says what the process runs under:
/// each proxied WebSocket connection holds two descriptors. Called just before a gateway
/// starts, so a refused configuration prints nothing but its problems.
fn report_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(
            "file-descriptor limit {limit}: room for about {} proxied WebSocket connections; beyond it new connections are refused and logged",
            limit.saturating_sub(64) / 2
        ),
        Err(error) => tracing::warn!(%error, "cannot read or raise the file-descriptor limit"),
    }
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn report(error: &ConfigError) {
    match error {
        ConfigError::Invalid(problems) => {
            eprintln!("{error}");
            eprintln!("{} problem(s) found; nothing was started.", problems.len());
        }
        ConfigError::Read { .. } => eprintln!("error: {error}"),
    }
}

fn validate(file: &Path) -> ExitCode {
    match config::load(file) {
        Ok(config) => {
            println!(
                "{}: configuration is valid ({} environment(s), {} proxy(ies))",
                file.display(),
                config.environments.len(),
                config.proxies.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            report(&error);
            ExitCode::FAILURE
        }
    }
}

async fn run(
    file: &Path,
    admin: Option<SocketAddr>,
    options: GatewayOptions,
    signals: Signals,
) -> ExitCode {
    // Read once: the gateway and the control plane start from the same text, and a change
    // written from now on differs from the stamp taken before it.
    let stamp = file_stamp(file);
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(source) => {
            report(&ConfigError::Read {
                path: file.to_path_buf(),
                source,
            });
            return ExitCode::FAILURE;
        }
    };
    let config = match config::parse_str(&text, file) {
        Ok(config) => config,
        Err(error) => {
            report(&error);
            return ExitCode::FAILURE;
        }
    };
    let Ok(admin) = bind_admin(admin.or(config.admin.as_ref().map(|a| a.listen))).await else {
        return ExitCode::FAILURE;
    };
    let Some(gateway) = start(&config, options).await else {
        return ExitCode::FAILURE;
    };
    let gateway = Arc::new(gateway);
    let control = match Control::declarative(file, &text, gateway.clone()).await {
        Ok(control) => Arc::new(control),
        Err(error) => {
            eprintln!("error: {error}");
            gateway.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    serve_control(control, admin, signals, Some((file, stamp))).await
}

async fn run_stateful(
    data: &Path,
    admin: Option<SocketAddr>,
    options: GatewayOptions,
    signals: Signals,
) -> ExitCode {
    let admin_addr = admin.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8001)));
    let Ok(admin) = bind_admin(Some(admin_addr)).await else {
        return ExitCode::FAILURE;
    };
    report_fd_limit();
    let control = match Control::stateful(data, options).await {
        Ok((control, _)) => Arc::new(control),
        Err(error) => {
            eprintln!("error: {}: {error}", data.display());
            return ExitCode::FAILURE;
        }
    };
    serve_control(control, admin, signals, None).await
}

/// Checks and binds the admin API's address (if any) before any environment listens, so a
/// refused or busy admin address stops start-up with nothing served. Err: reported.
async fn bind_admin(addr: Option<SocketAddr>) -> Result<Option<AdminListener>, ()> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let token = std::env::var("STRAIT_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    AdminListener::bind(addr, token)
        .await
        .map(Some)
        .map_err(|error| eprintln!("error: {error}"))
}

/// Serves the admin API (when bound), reloads `file` on SIGHUP and when it differs from the
/// stamp it was started from, and shuts everything down on SIGTERM/SIGINT.
async fn serve_control(
    control: Arc<Control>,
    admin: Option<AdminListener>,
    mut signals: Signals,
    file: Option<(&Path, Option<Stamp>)>,
) -> ExitCode {
    let admin: Option<AdminServer> = admin.map(|a| a.serve(control.clone()));
    let (file, mut seen) = file.unzip();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = signals.term.recv() => break,
            _ = signals.int.recv() => break,
            _ = signals.hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = control.reload().await;
            }
            _ = tick.tick(), if file.is_some() => {
                let now = file.map(file_stamp);
                if now != seen {
                    seen = now;
                    tracing::info!("the configuration file changed: reloading");
                    let _ = control.reload().await;
                }
            }
        }
    }
    tracing::info!("shutting down: no new connections; closing WebSocket sessions with 1001");
    if let Some(admin) = admin {
        admin.shutdown().await;
    }
    control.gateway().shutdown().await;
    ExitCode::SUCCESS
}

/// What tells a changed file: its modification time, length and content.
type Stamp = (std::time::SystemTime, u64, u64);

fn file_stamp(file: &Path) -> Option<Stamp> {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(file).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(file).ok()?.hash(&mut hasher);
    Some((meta.modified().ok()?, meta.len(), hasher.finish()))
}

async fn apply(file: &Path, admin: &str, dry_run: bool) -> ExitCode {
    let client = match AdminClient::new(admin, std::env::var("STRAIT_ADMIN_TOKEN").ok()) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match apply_file(&client, file, dry_run).await {
        Ok(steps) if steps.is_empty() => {
            println!(
                "nothing to change: the gateway already matches {}",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Ok(steps) => {
            let verb = if dry_run { "would" } else { "did" };
            println!("plan ({} step(s); {verb} apply):", steps.len());
            for step in &steps {
                println!("  {step}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn dump(admin: &str) -> ExitCode {
    let client = match AdminClient::new(admin, std::env::var("STRAIT_ADMIN_TOKEN").ok()) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match client.call(http::Method::GET, "/config", None).await {
        Ok(yaml) => {
            print!("{}", String::from_utf8_lossy(&yaml));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn start(config: &config::Config, options: GatewayOptions) -> Option<GatewayHandle> {
    report_fd_limit();
    Gateway::start_with(config, options)
        .await
        .map_err(|error| eprintln!("error: {error}"))
        .ok()
}

/// Environments log requests to standard output unless their `access_log` says otherwise;
/// spans go to `OTEL_EXPORTER_OTLP_ENDPOINT` when it is set. Backend host names resolve
/// through `dns_servers`, or /etc/resolv.conf when there are none. Client connections are
/// served by `workers` threads, one per CPU unless told, bound to them as `affinity` says.
fn gateway_options(
    dns_servers: Vec<SocketAddr>,
    workers: Option<u16>,
    affinity: Affinity,
) -> GatewayOptions {
    GatewayOptions {
        access_log: Some(Destination::Stdout),
        // The standard OpenTelemetry variable, e.g. http://127.0.0.1:4318.
        otlp_endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|v| !v.is_empty()),
        dns_servers: (!dns_servers.is_empty()).then_some(dns_servers),
        workers: workers.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            usize::from,
        ),
        bind_workers: affinity == Affinity::Auto,
    }
}

/// `--worker-cpu-affinity`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Affinity {
    Auto,
    Off,
}

/// `--dns-server`: `IP:PORT`, or an IP alone for port 53.
fn dns_server(value: &str) -> Result<SocketAddr, String> {
    value
        .parse::<SocketAddr>()
        .or_else(|_| value.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{value:?} is not an IP address or IP:PORT"))
}

/// Waits for SIGTERM/SIGINT, then shuts the gateway down gracefully.
async fn stop(gateway: GatewayHandle, mut signals: Signals) -> ExitCode {
    signals.stop().await;
    tracing::info!("shutting down: no new connections; closing WebSocket sessions with 1001");
    gateway.shutdown().await;
    ExitCode::SUCCESS
}

async fn run_echo(listen: SocketAddr, mut signals: Signals) -> ExitCode {
    let echo = match echo::spawn(listen).await {
        Ok(echo) => echo,
        Err(error) => {
            eprintln!("error: the echo backend cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("echo backend listening on http://{}", echo.local_addr());
    signals.stop().await;
    echo.shutdown().await;
    ExitCode::SUCCESS
}

async fn demo(listen: SocketAddr, backend: SocketAddr, signals: Signals) -> ExitCode {
    let echo = match echo::spawn(backend).await {
        Ok(echo) => echo,
        Err(error) => {
            eprintln!(
                "error: the echo backend cannot listen on {backend}: {error} (try --backend 127.0.0.1:0)"
            );
            return ExitCode::FAILURE;
        }
    };
    let yaml = format!(
        "environments:\n  - name: demo\n    listen: {listen}\n    websocket: true\nproxies:\n  - name: echo\n    path: /api/*\n    backend: http://{}/echo\n    deploy: [demo]\n",
        echo.local_addr()
    );
    let config = match config::parse_str(&yaml, Path::new("demo.yaml")) {
        Ok(config) => config,
        Err(error) => {
            report(&error);
            return ExitCode::FAILURE;
        }
    };
    let Some(gateway) = start(&config, gateway_options(Vec::new(), None, Affinity::Auto)).await
    else {
        echo.shutdown().await;
        return ExitCode::FAILURE;
    };
    let bound = gateway.local_addr("demo").unwrap_or(listen);
    println!(
        "Strait demo: a gateway in front of the built-in echo backend, with this configuration:\n"
    );
    println!("{yaml}");
    println!("Try it:");
    println!("  curl -s 'http://{bound}/api/hello?name=strait'");
    println!(
        "  WebSocket: ws://{bound}/api/chat   (any client, e.g. `websocat ws://{bound}/api/chat`)"
    );
    println!("Press Ctrl-C to stop.\n");
    let code = stop(gateway, signals).await;
    echo.shutdown().await;
    code
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP, registered once at start-up.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// SIGTERM or SIGINT.
    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
