//! The machine and software a comparison ran on: CPUs, memory, kernel, versions of strait,
//! nginx (and its TLS library), wrk, h2load and oha, the descriptor limits and the network
//! sysctls that matter for large runs.

use std::path::Path;

use crate::cpus::Layout;
use crate::procs::{FdLimits, first_line, line_where};
use crate::stack::Tools;

/// The machine and software a comparison ran on.
pub struct Machine {
    pub cpu_model: String,
    pub mem_gib: f64,
    pub kernel: String,
    pub date: String,
    pub strait: String,
    pub nginx: String,
    /// The TLS library nginx was built with (`nginx -V`).
    pub nginx_tls: String,
    pub wrk: String,
    pub h2load: String,
    /// `None` when oha was not found.
    pub oha: Option<String>,
    pub limits: FdLimits,
    /// The machine's CPU count, and which of them the gateway, the echo and the load
    /// generators ran on.
    pub layout: Layout,
    pub port_range: String,
    pub somaxconn: String,
    pub tw_reuse: String,
    pub nr_open: String,
}

impl Machine {
    /// A machine of two CPUs, every text "x", for tests of the report.
    #[cfg(test)]
    pub fn placeholder() -> Machine {
        let text = String::from("x");
        Machine {
            cpu_model: text.clone(),
            mem_gib: 1.0,
            kernel: text.clone(),
            date: text.clone(),
            strait: text.clone(),
            nginx: text.clone(),
            nginx_tls: text.clone(),
            wrk: text.clone(),
            h2load: text.clone(),
            oha: None,
            limits: FdLimits::default(),
            layout: Layout::default_for(2),
            port_range: text.clone(),
            somaxconn: text.clone(),
            tw_reuse: text.clone(),
            nr_open: text,
        }
    }

    pub fn read(tools: &Tools, limits: FdLimits, layout: Layout) -> Machine {
        let proc_line = |file: &str| {
            std::fs::read_to_string(file)
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|_| "unknown".into())
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".into(), |(_, m)| m.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu_model,
            mem_gib: mem_kib / (1024.0 * 1024.0),
            kernel: proc_line("/proc/sys/kernel/osrelease"),
            date: first_line(Path::new("date"), &["-u", "+%Y-%m-%d %H:%M UTC"]),
            strait: first_line(&tools.strait, &["--version"]),
            nginx: first_line(&tools.nginx, &["-v"]).replace("nginx version: ", ""),
            nginx_tls: line_where(&tools.nginx, &["-V"], |l| l.starts_with("built with")),
            wrk: first_line(&tools.wrk, &["-v"])
                .split(" Copyright")
                .next()
                .unwrap_or_default()
                .to_owned(),
            h2load: first_line(&tools.h2load, &["--version"]),
            oha: tools
                .oha
                .as_ref()
                .map(|oha| first_line(oha, &["--version"])),
            limits,
            layout,
            port_range: proc_line("/proc/sys/net/ipv4/ip_local_port_range"),
            somaxconn: proc_line("/proc/sys/net/core/somaxconn"),
            tw_reuse: proc_line("/proc/sys/net/ipv4/tcp_tw_reuse"),
            nr_open: proc_line("/proc/sys/fs/nr_open"),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "machine: {} CPU(s) ({}), {:.1} GiB; kernel {}; {}; {}; {}; {}; fd limit {} (soft was {}); {}",
            self.layout.cpus,
            self.cpu_model,
            self.mem_gib,
            self.kernel,
            self.strait,
            self.nginx,
            self.wrk,
            self.h2load,
            self.limits.hard,
            self.limits.soft_before,
            self.layout.describe()
        )
    }

    /// Ephemeral ports per (source address, destination) pair.
    pub fn ephemeral_ports(&self) -> Option<u64> {
        let mut it = self.port_range.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next()) {
            (Some(Ok(lo)), Some(Ok(hi))) if hi >= lo => Some(hi - lo + 1),
            _ => None,
        }
    }
}
