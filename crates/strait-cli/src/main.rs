//! `strait`: the command line. Thin: parsing arguments, logging and signals live here;
//! everything else is in the `strait` library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strait::config::{self, ConfigError};
use strait::{Gateway, GatewayHandle, echo};

#[derive(Parser)]
#[command(
    name = "strait",
    version,
    about = "An API gateway for HTTP and WebSocket traffic"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); `RUST_LOG` takes precedence.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the environments and proxies of a configuration file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
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

fn main() -> ExitCode {
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
                    Command::Run { config } => run(&config, signals).await,
                    Command::Echo { listen } => run_echo(listen, signals).await,
                    Command::Demo { listen, backend } => demo(listen, backend, signals).await,
                    Command::Validate { .. } => ExitCode::SUCCESS,
                }
            })
        }
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

async fn run(file: &Path, signals: Signals) -> ExitCode {
    let config = match config::load(file) {
        Ok(config) => config,
        Err(error) => {
            report(&error);
            return ExitCode::FAILURE;
        }
    };
    match start(&config).await {
        Some(gateway) => stop(gateway, signals).await,
        None => ExitCode::FAILURE,
    }
}

async fn start(config: &config::Config) -> Option<GatewayHandle> {
    Gateway::start(config)
        .await
        .map_err(|error| eprintln!("error: {error}"))
        .ok()
}

/// Waits for SIGTERM/SIGINT, then shuts the gateway down gracefully.
async fn stop(gateway: GatewayHandle, mut signals: Signals) -> ExitCode {
    signals.recv().await;
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
    signals.recv().await;
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
    let Some(gateway) = start(&config).await else {
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

/// SIGINT (Ctrl-C) and SIGTERM, registered once at start-up.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
