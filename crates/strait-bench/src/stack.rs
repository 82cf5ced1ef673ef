//! The processes under test: the echo backend (`strait echo`), Strait (`strait run` with a
//! generated YAML) and nginx (the rendered `bench/nginx.conf.template`), all in one temporary
//! folder and all killed when the [`Stack`] is dropped. Also finds the tools they need.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::procs::{ChildGuard, free_port, which};

/// The nginx configuration template, filled in by [`render_nginx`].
pub const NGINX_TEMPLATE: &str = include_str!("../../../bench/nginx.conf.template");
/// How long a server may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(15);

/// The three ways the load reaches the echo backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Direct,
    Nginx,
    Strait,
}

impl Side {
    /// The order of every round: direct → nginx → strait.
    pub const ALL: [Side; 3] = [Side::Direct, Side::Nginx, Side::Strait];

    pub fn name(self) -> &'static str {
        match self {
            Side::Direct => "direct",
            Side::Nginx => "nginx",
            Side::Strait => "Strait",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// External programs the comparison runs.
pub struct Tools {
    pub strait: PathBuf,
    pub nginx: PathBuf,
    pub wrk: PathBuf,
    pub h2load: PathBuf,
    /// `taskset`, when present, pins the load generators.
    pub taskset: Option<PathBuf>,
    /// This very binary, started again for the WebSocket load.
    pub me: PathBuf,
}

impl Tools {
    /// Finds every tool or explains what is missing and how to get it. Installs nothing.
    pub fn find(strait: &Path) -> Result<Tools> {
        let mut problems = Vec::new();
        let nginx = which("nginx");
        let wrk = which("wrk");
        let h2load = which("h2load");
        let missing: Vec<&str> = [("nginx", &nginx), ("wrk", &wrk), ("h2load", &h2load)]
            .iter()
            .filter(|(_, found)| found.is_none())
            .map(|(name, _)| *name)
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{} not installed: run `bash scripts/install-bench-tools.sh` (as root; it installs \
                 Debian's nginx, wrk and nghttp2-client packages) and try again.",
                missing.join(" and ")
            ));
        }
        if !strait.is_file() {
            problems.push(format!(
                "{} is missing: build it first with `cargo build --release` (this harness builds \
                 nothing itself), or point --strait at a strait binary.",
                strait.display()
            ));
        }
        let me = std::env::current_exe().context("cannot find this program's own path")?;
        match (nginx, wrk, h2load) {
            (Some(nginx), Some(wrk), Some(h2load)) if problems.is_empty() => Ok(Tools {
                strait: strait.to_owned(),
                nginx,
                wrk,
                h2load,
                taskset: which("taskset"),
                me,
            }),
            _ => bail!("cannot compare yet:\n  - {}", problems.join("\n  - ")),
        }
    }
}

/// Echo backend, nginx and Strait, running. Dropping it stops them (gateways first).
pub struct Stack {
    strait: ChildGuard,
    nginx: ChildGuard,
    echo: ChildGuard,
    pub echo_addr: SocketAddr,
    pub nginx_addr: SocketAddr,
    /// nginx's HTTP/2 (prior knowledge) port; the echo and Strait serve both on one.
    pub nginx_h2_addr: SocketAddr,
    pub strait_addr: SocketAddr,
    /// Strait's admin API (loopback, no token).
    pub strait_admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Starts all three on fresh loopback ports and waits until each accepts connections.
    /// `nofile` is the descriptor limit nginx's workers ask for.
    pub async fn start(tools: &Tools, nofile: u64, nginx_workers: usize) -> Result<Stack> {
        let dir = tempfile::Builder::new()
            .prefix("strait-bench-")
            .tempdir()
            .context("cannot create a temporary folder")?;
        // nginx's workers run as an unprivileged user when the master is root; they must be
        // able to enter the folder holding their temp paths.
        set_mode(dir.path(), 0o755)?;
        let path = dir.path();
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (echo_addr, nginx_addr, nginx_h2_addr, strait_addr, strait_admin) = (
            loopback(free_port()?),
            loopback(free_port()?),
            loopback(free_port()?),
            loopback(free_port()?),
            loopback(free_port()?),
        );

        let mut echo_cmd = Command::new(&tools.strait);
        echo_cmd.args(["echo", "--listen", &echo_addr.to_string()]);
        let echo_log = path.join("echo.log");
        let mut echo = ChildGuard::spawn("the echo backend (strait echo)", echo_cmd, &echo_log)?;
        echo.wait_listening(echo_addr, START_LIMIT, &echo_log)
            .await?;

        let yaml = strait_yaml(strait_addr, echo_addr, Some(strait_admin));
        let yaml_path = path.join("strait.yaml");
        std::fs::write(&yaml_path, &yaml).context("cannot write strait.yaml")?;
        let mut strait_cmd = Command::new(&tools.strait);
        strait_cmd.arg("run").arg("--config").arg(&yaml_path);
        // Its stdout and stderr go to a file, never to a pipe that could fill and stall it;
        // the access log that `strait run` would write to stdout is off in the YAML anyway.
        let strait_log = path.join("strait.log");
        let mut strait = ChildGuard::spawn("strait run", strait_cmd, &strait_log)?;
        strait
            .wait_listening(strait_addr, START_LIMIT, &strait_log)
            .await?;
        strait
            .wait_listening(strait_admin, START_LIMIT, &strait_log)
            .await?;

        let listen = [nginx_addr, nginx_h2_addr];
        let conf = render_nginx(path, listen, echo_addr, nofile, nginx_workers);
        let conf_path = path.join("nginx.conf");
        std::fs::write(&conf_path, conf).context("cannot write nginx.conf")?;
        let mut nginx_cmd = Command::new(&tools.nginx);
        nginx_cmd.arg("-p").arg(path).arg("-c").arg(&conf_path);
        // Start-up problems go to stderr (captured here); later ones to error.log.
        let nginx_log = path.join("nginx.out");
        let mut nginx = ChildGuard::spawn("nginx", nginx_cmd, &nginx_log)?;
        nginx
            .wait_listening(nginx_addr, START_LIMIT, &nginx_log)
            .await?;

        Ok(Stack {
            strait,
            nginx,
            echo,
            echo_addr,
            nginx_addr,
            nginx_h2_addr,
            strait_addr,
            strait_admin,
            _dir: dir,
        })
    }

    /// Where `side`'s load goes, and the process whose memory counts for it.
    pub fn endpoint(&self, side: Side) -> (SocketAddr, u32) {
        match side {
            Side::Direct => (self.echo_addr, self.echo.pid()),
            Side::Nginx => (self.nginx_addr, self.nginx.pid()),
            Side::Strait => (self.strait_addr, self.strait.pid()),
        }
    }

    /// Where `side`'s HTTP/2 load goes.
    pub fn h2_endpoint(&self, side: Side) -> SocketAddr {
        match side {
            Side::Nginx => self.nginx_h2_addr,
            Side::Direct | Side::Strait => self.endpoint(side).0,
        }
    }
}

/// One environment with WebSocket on and its access log off (as nginx's is), one proxy `/*`
/// to the echo backend, and the admin API on `admin` when given.
pub fn strait_yaml(listen: SocketAddr, echo: SocketAddr, admin: Option<SocketAddr>) -> String {
    let mut lines = vec![
        "environments:".to_owned(),
        "  - name: bench".into(),
        format!("    listen: {listen}"),
        "    websocket: true".into(),
        "    access_log:".into(),
        "      format: off".into(),
        "proxies:".into(),
        "  - name: echo".into(),
        "    path: /*".into(),
        format!("    backend: http://{echo}"),
        "    deploy: [bench]".into(),
    ];
    if let Some(admin) = admin {
        lines.extend(["admin:".into(), format!("  listen: {admin}")]);
    }
    lines.join("\n") + "\n"
}

/// Fills in the nginx template; `listen` is the HTTP/1.1 address, then the HTTP/2 one.
pub fn render_nginx(
    prefix: &Path,
    [listen, listen_h2]: [SocketAddr; 2],
    echo: SocketAddr,
    nofile: u64,
    workers: usize,
) -> String {
    NGINX_TEMPLATE
        .replace("{{PREFIX}}", &prefix.display().to_string())
        .replace("{{LISTEN}}", &listen.to_string())
        .replace("{{LISTEN_H2}}", &listen_h2.to_string())
        .replace("{{ECHO}}", &echo.to_string())
        .replace("{{WORKERS}}", &workers.to_string())
        .replace("{{NOFILE}}", &nofile.to_string())
        .replace("{{WORKER_CONNECTIONS}}", &nofile.to_string())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_has_no_placeholder_left() {
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        let conf = render_nginx(Path::new("/tmp/x"), [a, a], a, 20_000, 2);
        assert!(!conf.contains("{{"), "{conf}");
        assert!(conf.contains("keepalive 256;"));
    }

    #[test]
    fn the_strait_yaml_is_valid() {
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        let admin = SocketAddr::from(([127, 0, 0, 1], 2));
        for admin in [None, Some(admin)] {
            let yaml = strait_yaml(a, a, admin);
            let config = strait::config::parse_str(&yaml, Path::new("bench.yaml"))
                .unwrap_or_else(|e| panic!("{yaml}\n{e}"));
            assert_eq!(config.admin.map(|a| a.listen), admin, "{yaml}");
            for env in &config.environments {
                assert_eq!(env.access_log.format, None, "access log off in {yaml}");
            }
        }
    }
}
