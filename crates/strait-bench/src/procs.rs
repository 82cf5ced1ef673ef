//! Processes the harness starts and inspects: a guard that kills a child when dropped, waiting
//! for a port to accept, finding tools on PATH, resident memory from /proc, and the
//! file-descriptor limit.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A child process that is killed (and reaped) when the guard is dropped.
pub struct ChildGuard {
    pub name: String,
    child: Child,
}

impl ChildGuard {
    /// Starts `command` with stdin closed and stdout/stderr going to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<ChildGuard> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("cannot create the log file {}", log.display()))?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        Ok(ChildGuard {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `addr` accepts TCP connections; fails if the child exits or `limit` passes.
    pub async fn wait_listening(
        &mut self,
        addr: SocketAddr,
        limit: Duration,
        log: &Path,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "{} exited ({status}) before listening on {addr}; the end of its log {}:\n{}",
                    self.name,
                    log.display(),
                    tail(log)
                );
            }
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!(
            "{} did not listen on {addr} within {limit:?}; the end of its log {}:\n{}",
            self.name,
            log.display(),
            tail(log)
        )
    }
}

impl Drop for ChildGuard {
    /// SIGTERM first (nginx's master then stops its workers), SIGKILL after 3 s; children
    /// that outlive their parent are killed too.
    fn drop(&mut self) {
        let pid = self.child.id();
        let kids = children(pid);
        if let Ok(None) = self.child.try_wait() {
            signal("TERM", pid);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for kid in kids {
            if Path::new(&format!("/proc/{kid}")).exists() {
                signal("KILL", kid);
            }
        }
    }
}

/// Sends a signal with the `kill` command (no unsafe code in this crate).
fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last lines of a log file, for error messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let last = lines.get(lines.len().saturating_sub(15)..);
    last.unwrap_or_default().join("\n")
}

/// A loopback port that was free a moment ago (bound, then released), for a server started
/// next. It is taken outside the kernel's ephemeral range (`ip_local_port_range`): a port
/// from `bind(:0)` lies inside it, and between its release and the server's `listen` the
/// load's own outgoing connections could take it as their source port (seen in a full run:
/// `strait run` failed with "Address already in use").
pub fn free_port() -> Result<u16> {
    // Each call starts after the last port handed out, so consecutive calls differ.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = ephemeral_range();
    // Below the range when there is room there, else above it.
    let (first, last) = if low > 10_000 {
        (10_000, low - 1)
    } else {
        (high.saturating_add(1).min(65_535), 65_535)
    };
    let span = last.saturating_sub(first) + 1;
    let start = NEXT.fetch_add(1, Ordering::Relaxed) + std::process::id() % span;
    for step in 0..span {
        let port = first + (start + step) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            NEXT.fetch_add(step, Ordering::Relaxed);
            return Ok(port);
        }
    }
    // No free port outside the range: let the kernel pick one inside it.
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// The kernel's ephemeral port range (Linux's default when it cannot be read).
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(str::parse::<u32>);
            Some((bounds.next()?.ok()?, bounds.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999))
}

/// The full path of `tool` on PATH, if it is there.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let extra = ["/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// First line of a command's combined output (for version strings); empty if it cannot run.
pub fn first_line(program: &Path, args: &[&str]) -> String {
    line_where(program, args, |_| true)
}

/// The first line of what `program args` prints (stdout, then stderr) that `wanted` picks,
/// trimmed; empty when it cannot run or prints none.
pub fn line_where(program: &Path, args: &[&str], wanted: impl Fn(&str) -> bool) -> String {
    let Ok(output) = Command::new(program).args(args).output() else {
        return String::new();
    };
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text.lines()
        .map(str::trim)
        .find(|line| wanted(line))
        .unwrap_or_default()
        .to_owned()
}

/// VmRSS of one process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// VmRSS of a process plus its direct children (nginx's master and workers), in KiB.
pub fn rss_tree_kib(pid: u32) -> Option<u64> {
    let mut total = rss_kib(pid)?;
    for child in children(pid) {
        total += rss_kib(child).unwrap_or(0);
    }
    Some(total)
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| parent_of(candidate) == Some(pid))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Soft and hard RLIMIT_NOFILE before and after raising the soft limit to the hard one.
#[derive(Clone, Copy, Debug, Default)]
pub struct FdLimits {
    pub soft_before: u64,
    pub soft_after: u64,
    pub hard: u64,
}

/// Raises this process's soft descriptor limit to its hard limit (children inherit it).
pub fn raise_fd_limit() -> FdLimits {
    let (soft_before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((0, 0));
    let soft_after = rlimit::increase_nofile_limit(hard).unwrap_or(soft_before);
    FdLimits {
        soft_before,
        soft_after,
        hard,
    }
}

/// User and system CPU seconds a process has used (all its threads), from its stat file.
fn cpu_seconds(stat_file: &str) -> Option<(f64, f64)> {
    let [user, system, _, _] = parse_cpu_seconds(&std::fs::read_to_string(stat_file).ok()?)?;
    Some((user, system))
}

/// utime, stime, cutime and cstime (its waited-for children's) of a stat file, in seconds.
/// Assumes the usual 100 clock ticks per second (`getconf CLK_TCK`).
fn parse_cpu_seconds(stat: &str) -> Option<[f64; 4]> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    // After the comm: state is field 3; utime, stime, cutime and cstime are fields 14 to 17.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let mut next = || fields.next()?.parse::<f64>().ok();
    Some([
        utime / 100.0,
        next()? / 100.0,
        next()? / 100.0,
        next()? / 100.0,
    ])
}

/// CPU seconds (user + system) of this process's children that have ended and been waited
/// for: a load generator's own CPU, read before it starts and after it is reaped.
pub fn ended_children_cpu_seconds() -> Option<f64> {
    let [_, _, user, system] =
        parse_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(user + system)
}

/// CPU time (user + system) this process has used, in seconds.
pub fn self_cpu_seconds() -> Option<f64> {
    cpu_seconds("/proc/self/stat").map(|(user, system)| user + system)
}

/// User and system CPU seconds of a process plus its direct children (nginx's master and
/// workers).
pub fn tree_cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let (mut user, mut system) = cpu_seconds(&format!("/proc/{pid}/stat"))?;
    for child in children(pid) {
        if let Some((u, s)) = cpu_seconds(&format!("/proc/{child}/stat")) {
            user += u;
            system += s;
        }
    }
    Some((user, system))
}

/// Measures this process's CPU use between [`CpuMeter::start`] and [`CpuMeter::percent`].
pub struct CpuMeter {
    cpu: Option<f64>,
    wall: std::time::Instant,
}

impl CpuMeter {
    pub fn start() -> CpuMeter {
        CpuMeter {
            cpu: self_cpu_seconds(),
            wall: Instant::now(),
        }
    }

    /// Percent of one core used since the start (200 = two cores busy).
    pub fn percent(&self) -> f64 {
        match (self.cpu, self_cpu_seconds()) {
            (Some(a), Some(b)) => (b - a) / self.wall.elapsed().as_secs_f64().max(1e-9) * 100.0,
            _ => f64::NAN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_are_read_after_the_command_name() {
        // comm may hold spaces and parentheses; utime to cstime are fields 14 to 17.
        let stat = "42 (nginx: worker (1)) S 41 41 41 0 -1 4194624 300 0 0 0 250 125 7 3 20 0";
        assert_eq!(parse_cpu_seconds(stat), Some([2.5, 1.25, 0.07, 0.03]));
        assert_eq!(parse_cpu_seconds("42 (short) S 41"), None);
        let (user, system) = tree_cpu_seconds(std::process::id()).unwrap();
        assert!(user >= 0.0 && system >= 0.0);
        assert_eq!(tree_cpu_seconds(u32::MAX), None);
    }

    #[test]
    fn free_ports_differ_and_stay_out_of_the_ephemeral_range() {
        let (low, high) = ephemeral_range();
        let ports: Vec<u16> = (0..3).map(|_| free_port().unwrap()).collect();
        for port in &ports {
            let port = u32::from(*port);
            // The fallback inside the range is only for a machine with no room outside it.
            if low > 10_000 || high < 65_535 {
                assert!(!(low..=high).contains(&port), "{port} in {low}-{high}");
            }
            assert!(
                TcpListener::bind(("127.0.0.1", port as u16)).is_ok(),
                "{port}"
            );
        }
        assert!(ports[0] != ports[1] && ports[1] != ports[2], "{ports:?}");
    }
}
