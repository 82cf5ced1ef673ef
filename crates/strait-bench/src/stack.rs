//! The processes under test: the echo backend (`strait echo`), Strait (`strait run` with a
//! generated YAML) and nginx (the rendered `bench/nginx.conf.template`), all in one temporary
//! folder and all killed when the [`Stack`] is dropped. Also finds the tools they need.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cpus::{Layout, Role};
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
    /// `taskset`, when present, puts each role on its CPUs.
    pub taskset: Option<PathBuf>,
    /// `oha`, when present, loads HTTP at a fixed rate (`scripts/install-bench-tools.sh --oha`).
    pub oha: Option<PathBuf>,
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
                oha: which("oha"),
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
    /// nginx's TLS port (HTTP/1.1 or HTTP/2 by ALPN).
    pub nginx_tls_addr: SocketAddr,
    pub strait_addr: SocketAddr,
    /// Strait's TLS environment (HTTP/1.1 or HTTP/2 by ALPN), with the same certificate.
    pub strait_tls_addr: SocketAddr,
    /// Each gateway's listener that writes an access log (nginx's, Strait's).
    pub nginx_logged_addr: SocketAddr,
    pub strait_logged_addr: SocketAddr,
    /// Strait's admin API (loopback, no token).
    pub strait_admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Starts all three on fresh loopback ports, each on its CPUs in `layout`, and waits
    /// until each accepts connections. `nofile` is the descriptor limit nginx's workers ask
    /// for; nginx gets a worker per gateway CPU, as Strait takes a worker thread per CPU it
    /// may run on.
    pub async fn start(tools: &Tools, nofile: u64, layout: &Layout) -> Result<Stack> {
        let taskset = tools.taskset.as_deref();
        let dir = tempfile::Builder::new()
            .prefix("strait-bench-")
            .tempdir()
            .context("cannot create a temporary folder")?;
        // nginx's workers run as an unprivileged user when the master is root; they must be
        // able to enter the folder holding their temp paths.
        set_mode(dir.path(), 0o755)?;
        let path = dir.path();
        let port = || free_port().map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
        let (echo_addr, strait_addr, strait_tls_addr, strait_logged_addr, strait_admin) =
            (port()?, port()?, port()?, port()?, port()?);
        let (nginx_addr, nginx_h2_addr, nginx_tls_addr, nginx_logged_addr) =
            (port()?, port()?, port()?, port()?);
        let cert = Certificate::write(path)?;

        let mut echo_cmd = layout.command(Role::Backend, &tools.strait, taskset);
        echo_cmd.args(["echo", "--listen", &echo_addr.to_string()]);
        let echo_log = path.join("echo.log");
        let mut echo = ChildGuard::spawn("the echo backend (strait echo)", echo_cmd, &echo_log)?;
        echo.wait_listening(echo_addr, START_LIMIT, &echo_log)
            .await?;

        let yaml = strait_yaml(
            strait_addr,
            echo_addr,
            Some(strait_admin),
            Some((strait_tls_addr, &cert)),
            Some((strait_logged_addr, &path.join("strait-access.log"))),
        );
        let yaml_path = path.join("strait.yaml");
        std::fs::write(&yaml_path, &yaml).context("cannot write strait.yaml")?;
        let mut strait_cmd = layout.command(Role::Gateway, &tools.strait, taskset);
        strait_cmd.arg("run").arg("--config").arg(&yaml_path);
        // Its stdout and stderr go to a file, never to a pipe that could fill and stall it;
        // its access logs are off in the YAML, or go to a file of their own.
        let strait_log = path.join("strait.log");
        let mut strait = ChildGuard::spawn("strait run", strait_cmd, &strait_log)?;
        strait
            .wait_listening(strait_addr, START_LIMIT, &strait_log)
            .await?;
        for addr in [strait_tls_addr, strait_logged_addr, strait_admin] {
            strait
                .wait_listening(addr, START_LIMIT, &strait_log)
                .await?;
        }

        let listen = [nginx_addr, nginx_h2_addr, nginx_tls_addr, nginx_logged_addr];
        let workers = layout.cpus_of(Role::Gateway);
        let conf = render_nginx(path, listen, &cert, echo_addr, nofile, workers);
        let conf_path = path.join("nginx.conf");
        std::fs::write(&conf_path, conf).context("cannot write nginx.conf")?;
        let mut nginx_cmd = layout.command(Role::Gateway, &tools.nginx, taskset);
        nginx_cmd.arg("-p").arg(path).arg("-c").arg(&conf_path);
        // Start-up problems go to stderr (captured here); later ones to error.log.
        let nginx_log = path.join("nginx.out");
        let mut nginx = ChildGuard::spawn("nginx", nginx_cmd, &nginx_log)?;
        for addr in [nginx_addr, nginx_tls_addr, nginx_logged_addr] {
            nginx.wait_listening(addr, START_LIMIT, &nginx_log).await?;
        }

        Ok(Stack {
            strait,
            nginx,
            echo,
            echo_addr,
            nginx_addr,
            nginx_h2_addr,
            nginx_tls_addr,
            strait_addr,
            strait_tls_addr,
            nginx_logged_addr,
            strait_logged_addr,
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

    /// Where `side`'s TLS load goes: none for the echo backend, which speaks no TLS.
    pub fn tls_endpoint(&self, side: Side) -> Option<SocketAddr> {
        match side {
            Side::Direct => None,
            Side::Nginx => Some(self.nginx_tls_addr),
            Side::Strait => Some(self.strait_tls_addr),
        }
    }

    /// Where `side`'s load goes to be logged: none for the echo backend, which logs nothing.
    pub fn logged_endpoint(&self, side: Side) -> Option<SocketAddr> {
        match side {
            Side::Direct => None,
            Side::Nginx => Some(self.nginx_logged_addr),
            Side::Strait => Some(self.strait_logged_addr),
        }
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1 (ECDSA P-256, rcgen's default)
/// that both gateways serve; the load generators do not verify it.
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certificate {
    /// Makes one and writes it into `dir` as `cert.pem` and `key.pem`.
    pub fn write(dir: &Path) -> Result<Certificate> {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let made = rcgen::generate_simple_self_signed(names)
            .context("cannot make a self-signed certificate")?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).context("cannot write cert.pem")?;
        std::fs::write(&key, made.signing_key.serialize_pem()).context("cannot write key.pem")?;
        Ok(Certificate { cert, key })
    }
}

/// One environment with WebSocket on and its access log off (as nginx's is); when given, a
/// second like it on `tls` with that certificate, and a third on `logged` writing its
/// `combined` access log to that file (as nginx's logged server does); one proxy `/*` to the
/// echo backend deployed to each, and the admin API on `admin` when given.
pub fn strait_yaml(
    listen: SocketAddr,
    echo: SocketAddr,
    admin: Option<SocketAddr>,
    tls: Option<(SocketAddr, &Certificate)>,
    logged: Option<(SocketAddr, &Path)>,
) -> String {
    let quoted = |path: &Path| format!("{:?}", path.display().to_string());
    let env = |name: &str, listen: SocketAddr, log: Option<&Path>| {
        [
            format!("  - name: {name}"),
            format!("    listen: {listen}"),
            "    websocket: true".into(),
            match log {
                None => "    access_log: { format: off }".into(),
                Some(file) => format!(
                    "    access_log: {{ format: combined, file: {} }}",
                    quoted(file)
                ),
            },
        ]
    };
    let mut lines = vec!["environments:".to_owned()];
    let mut deploy = vec!["bench"];
    lines.extend(env("bench", listen, None));
    if let Some((listen, cert)) = tls {
        lines.extend(env("bench-tls", listen, None));
        lines.push(format!(
            "    tls: {{ cert: {}, key: {} }}",
            quoted(&cert.cert),
            quoted(&cert.key)
        ));
        deploy.push("bench-tls");
    }
    if let Some((listen, file)) = logged {
        lines.extend(env("bench-logged", listen, Some(file)));
        deploy.push("bench-logged");
    }
    lines.extend([
        "proxies:".into(),
        "  - name: echo".into(),
        "    path: /*".into(),
        format!("    backend: http://{echo}"),
        format!("    deploy: [{}]", deploy.join(", ")),
    ]);
    if let Some(admin) = admin {
        lines.extend(["admin:".into(), format!("  listen: {admin}")]);
    }
    lines.join("\n") + "\n"
}

/// Fills in the nginx template; `listen` is the HTTP/1.1 address, the HTTP/2 one, the TLS one
/// (serving `cert`), then the one that logs.
pub fn render_nginx(
    prefix: &Path,
    [listen, listen_h2, listen_tls, listen_logged]: [SocketAddr; 4],
    cert: &Certificate,
    echo: SocketAddr,
    nofile: u64,
    workers: usize,
) -> String {
    NGINX_TEMPLATE
        .replace("{{PREFIX}}", &prefix.display().to_string())
        .replace("{{LISTEN}}", &listen.to_string())
        .replace("{{LISTEN_H2}}", &listen_h2.to_string())
        .replace("{{LISTEN_TLS}}", &listen_tls.to_string())
        .replace("{{LISTEN_LOGGED}}", &listen_logged.to_string())
        .replace("{{CERT}}", &cert.cert.display().to_string())
        .replace("{{KEY}}", &cert.key.display().to_string())
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
        let cert = Certificate {
            cert: "/tmp/x/cert.pem".into(),
            key: "/tmp/x/key.pem".into(),
        };
        let conf = render_nginx(Path::new("/tmp/x"), [a, a, a, a], &cert, a, 20_000, 2);
        assert!(!conf.contains("{{"), "{conf}");
        assert!(
            conf.contains("ssl_certificate_key /tmp/x/key.pem;"),
            "{conf}"
        );
        assert!(conf.contains("keepalive 256;"));
    }

    #[test]
    fn the_strait_yaml_is_valid() {
        use strait::config::AccessLogFormat;
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        let admin = SocketAddr::from(([127, 0, 0, 1], 2));
        let dir = tempfile::tempdir().unwrap();
        let cert = Certificate::write(dir.path()).unwrap();
        let tls = SocketAddr::from(([127, 0, 0, 1], 3));
        let logged = SocketAddr::from(([127, 0, 0, 1], 4));
        let log = dir.path().join("access.log");
        let all = (
            Some(admin),
            Some((tls, &cert)),
            Some((logged, log.as_path())),
        );
        for (admin, tls, logged) in [(None, None, None), all] {
            let yaml = strait_yaml(a, a, admin, tls, logged);
            let config = strait::config::parse_str(&yaml, Path::new("bench.yaml"))
                .unwrap_or_else(|e| panic!("{yaml}\n{e}"));
            assert_eq!(config.admin.map(|a| a.listen), admin, "{yaml}");
            let envs = 1 + usize::from(tls.is_some()) + usize::from(logged.is_some());
            assert_eq!(config.environments.len(), envs, "{yaml}");
            assert_eq!(config.proxies[0].deploy.len(), envs, "{yaml}");
            for env in &config.environments {
                let log = &env.access_log;
                if env.name == "bench-logged" {
                    assert_eq!(env.listen, logged.unwrap().0, "{yaml}");
                    assert_eq!(log.format, Some(AccessLogFormat::Combined), "{yaml}");
                    assert_eq!(log.file.as_deref(), logged.map(|l| l.1), "{yaml}");
                } else {
                    assert_eq!(log.format, None, "access log off in {yaml}");
                }
            }
        }
    }
}
