//! `strait`: the command line. Thin: parsing arguments, logging and signals live here;
//! everything else is in the `strait` library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strait::config::{self, ConfigError};
use strait::{Gateway, echo};

#[derive(Parser)]
#[command(name = "strait", version, about = "An API gateway for HTTP and WebSocket traffic")]
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
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async move {
                match command {
                    Command::Run { config } => run(&config).await,
                    Command::Echo { listen } => run_echo(listen).await,
                    Command::Demo { listen, backend } => demo(listen, backend).await,
                    Command::Validate { .. } => ExitCode::SUCCESS,
                }
            })
        }
    }
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
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

async fn run(file: &Path) -> ExitCode {
    let config = match config::load(file) {
        Ok(config) => config,
        Err(error) => {
            report(&error);
            return ExitCode::FAILURE;
        }
    };
    serve(&config).await
}

async fn serve(config: &config::Config) -> ExitCode {
    let gateway = match Gateway::start(config).await {
        Ok(gateway) => gateway,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; closing WebSocket sessions with 1001");
    gateway.shutdown().await;
    ExitCode::SUCCESS
}

async fn run_echo(listen: SocketAddr) -> ExitCode {
    let echo = match echo::spawn(listen).await {
        Ok(echo) => echo,
        Err(error) => {
            eprintln!("error: the echo backend cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("echo backend listening on http://{}", echo.local_addr());
    shutdown_signal().await;
    echo.shutdown().await;
    ExitCode::SUCCESS
}

async fn demo(listen: SocketAddr, backend: SocketAddr) -> ExitCode {
    let echo = match echo::spawn(backend).await {
        Ok(echo) => echo,
        Err(error) => {
            eprintln!("error: the echo backend cannot listen on {backend}: {error} (try --backend 127.0.0.1:0)");
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
    println!("Strait demo: a gateway in front of the built-in echo backend, with this configuration:\n");
    println!("{yaml}");
    println!("Try it:");
    println!("  curl -s 'http://{listen}/api/hello?name=strait'");
    println!("  WebSocket: ws://{listen}/api/chat   (any client, e.g. `websocat ws://{listen}/api/chat`)");
    println!("Press Ctrl-C to stop.\n");
    let code = serve(&config).await;
    echo.shutdown().await;
    code
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
