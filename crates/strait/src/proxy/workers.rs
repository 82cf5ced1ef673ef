//! Data-plane workers: threads that each run a single-threaded runtime — like nginx's worker
//! processes. Each runs an accept loop per listener (on its own socket, see
//! [`super::listener`]) and serves what it accepts — or hands it to the least loaded worker
//! when clearly busier ([`Workers::assign`]) — with everything those connections open
//! (backend connections, WebSocket sessions, their timers), so a connection's requests and
//! frames never wait for a wake-up from another thread. The control plane (admin, reloads,
//! health checks) stays on the runtime that started the gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How soon a worker always has a timer due. tokio wakes its own thread (an eventfd write,
/// then an extra `epoll_wait`) whenever a timer is set to fire before every armed one, as a
/// connection's connect, head or idle timeout did for about half the WebSocket sessions
/// (`scripts/syscalls.sh connect`). With a timer always due within a second, the data
/// plane's timeouts — seconds long — never come first; the price is one wake-up a second.
const TIMER_ANCHOR: Duration = Duration::from_secs(1);

/// Task polls between two looks for new I/O events while tasks are ready (tokio's default
/// is 61). A request takes five task polls, three of them woken by the worker itself (its
/// backend connection's task, and back); each such wake-up queues at once, while a socket
/// that became readable waits for the next look. Looking every 16 polls serves readable
/// connections sooner: `scripts/ab.sh` HTTP keep-alive, 22 pairs in three sets, p99 lower
/// in 18 (medians 1.8–2.2 ms → 1.4–1.7 ms), rate 0.98–1.00×; echo and churn unchanged.
/// That was with the workers unbound; bound to CPUs (see [`cpus_to_bind`]) 16 and 61 come
/// out alike (18 pairs: rate 0.99–1.00×, p99 lower in 6), so 16 stays for workers left to
/// the scheduler.
const EVENT_INTERVAL: u32 = 16;

pub struct Workers {
    handles: Vec<Handle>,
    /// Client connections each worker serves.
    load: Arc<[AtomicUsize]>,
    /// Stops the threads once the gateway is gone: their runtimes drop whatever is left.
    _stop: DropGuard,
}

impl Workers {
    /// Starts `count` (at least one) worker threads; with `bind`, each on a CPU of its own
    /// when they are as many as the CPUs the process may run on (see [`cpus_to_bind`]).
    pub fn start(count: usize, bind: bool) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        // Also stops the threads already started if a later one cannot be.
        let guard = stop.clone().drop_guard();
        let count = count.max(1);
        let cpus = if bind { cpus_to_bind(count) } else { None };
        let mut handles = Vec::with_capacity(count);
        // Taken before any thread starts: what the gateway builds next sizes its per-worker
        // slots by them.
        let first_shard = crate::worker::reserve(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .event_interval(EVENT_INTERVAL)
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            runtime.spawn(timer_anchor());
            let stopped = stop.clone();
            let cpu = cpus.as_ref().and_then(|cpus| cpus.get(i).copied());
            std::thread::Builder::new()
                .name(format!("strait-worker-{i}"))
                .spawn(move || {
                    crate::worker::set(i, first_shard + i);
                    if let Some(cpu) = cpu {
                        bind_to(cpu);
                    }
                    runtime.block_on(stopped.cancelled())
                })?;
        }
        match &cpus {
            Some(cpus) => tracing::info!(?cpus, "each worker thread runs on a CPU of its own"),
            None if bind => tracing::info!(
                workers = count,
                "worker threads are not bound to CPUs: they are not as many as the CPUs this process may run on"
            ),
            None => {}
        }
        let load = handles.iter().map(|_| AtomicUsize::new(0)).collect();
        Ok(Workers {
            handles,
            load,
            _stop: guard,
        })
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Counts a connection `worker` accepted on the worker that should serve it (see
    /// [`pick`]); that worker's runtime when it is another one.
    pub fn assign(&self, worker: usize) -> (Serving, Option<&Handle>) {
        let to = pick(worker, self.load.iter().map(|l| l.load(Ordering::Relaxed)));
        if let Some(load) = self.load.get(to) {
            load.fetch_add(1, Ordering::Relaxed);
        }
        let serving = Serving {
            load: self.load.clone(),
            worker: to,
        };
        (serving, self.handles.get(to).filter(|_| to != worker))
    }

    /// Client connections each worker serves, by index.
    pub fn loads(&self) -> Arc<[AtomicUsize]> {
        self.load.clone()
    }
}

/// Where a connection `worker` accepted goes, given each worker's connections: `worker`
/// itself, unless it serves more than the least loaded one by some slack, which then takes
/// it. The kernel spreads connections over the workers' sockets by a hash of their
/// addresses, blind to load: 64 connections came out 42 to 23 in one of eight tries
/// (nginx's workers, taking turns at one socket, 37 to 28 at worst). The slack keeps
/// connections from moving (two `epoll_ctl` calls and a wake-up) for a difference of a few.
fn pick(worker: usize, loads: impl Iterator<Item = usize>) -> usize {
    let mut mine = 0;
    let mut least = (worker, usize::MAX);
    for (w, n) in loads.enumerate() {
        if w == worker {
            mine = n;
        }
        if n < least.1 {
            least = (w, n);
        }
    }
    if mine > least.1.saturating_add(2 + mine / 16) {
        least.0
    } else {
        worker
    }
}

/// One connection counted on its worker (see [`Workers::assign`]), until dropped.
#[derive(Debug)]
pub struct Serving {
    load: Arc<[AtomicUsize]>,
    worker: usize,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(load) = self.load.get(self.worker) {
            load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The CPUs to bind `count` workers to, one each: those the process may run on, when they
/// are exactly `count` (as with the default of a worker per CPU, or under `taskset`). Left
/// to the scheduler, two workers stacked on one CPU: the one that kept finding ready
/// connections ran for up to a 4 ms tick while the other, all its connections with it,
/// waited (`scripts/sched-waits.sh`, `wrk -c64`: 5–13 waits over 2 ms in 2 s per worker,
/// 0–2 for nginx's). The price: a bound worker cannot leave a CPU that something else keeps
/// busy. With fewer workers than CPUs, or more, binding would keep a worker from a CPU the
/// scheduler could give it, so they are left alone.
#[cfg(target_os = "linux")]
fn cpus_to_bind(count: usize) -> Option<Vec<usize>> {
    let cpus = listed(&rustix::thread::sched_getaffinity(None).ok()?);
    (cpus.len() == count).then_some(cpus)
}

/// The CPUs in `set`, in order.
#[cfg(target_os = "linux")]
fn listed(set: &rustix::thread::CpuSet) -> Vec<usize> {
    (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn cpus_to_bind(_count: usize) -> Option<Vec<usize>> {
    None
}

/// Binds the calling thread to `cpu` (below `CpuSet::MAX_CPU`); if the kernel refuses, the
/// thread runs where the scheduler puts it.
#[cfg(target_os = "linux")]
fn bind_to(cpu: usize) {
    use rustix::thread::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    set.set(cpu);
    if let Err(error) = sched_setaffinity(None, &set) {
        tracing::warn!(cpu, %error, "a worker thread could not be bound to its CPU");
    }
}

#[cfg(not(target_os = "linux"))]
fn bind_to(_cpu: usize) {}

/// Keeps a timer due within [`TIMER_ANCHOR`] on the runtime it runs on, forever.
async fn timer_anchor() {
    let mut tick = tokio::time::interval(TIMER_ANCHOR);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.handles.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    use super::listed;
    use super::{Workers, pick};

    /// The CPUs each worker thread may run on.
    #[cfg(target_os = "linux")]
    async fn cpus_of(workers: &Workers) -> Vec<Vec<usize>> {
        let mut cpus = Vec::new();
        for handle in workers.handles() {
            let allowed = handle.spawn(async { rustix::thread::sched_getaffinity(None) });
            cpus.push(listed(&allowed.await.unwrap().unwrap()));
        }
        cpus
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn workers_as_many_as_the_cpus_are_bound_one_to_each() {
        let allowed = listed(&rustix::thread::sched_getaffinity(None).unwrap());
        let one_each: Vec<Vec<usize>> = allowed.iter().map(|&c| vec![c]).collect();
        let workers = Workers::start(allowed.len(), true).unwrap();
        assert_eq!(cpus_of(&workers).await, one_each);
        // Not asked to, or one worker more than CPUs: each may run on any of them.
        let workers = Workers::start(allowed.len(), false).unwrap();
        assert_eq!(
            cpus_of(&workers).await,
            vec![allowed.clone(); allowed.len()]
        );
        let workers = Workers::start(allowed.len() + 1, true).unwrap();
        assert_eq!(
            cpus_of(&workers).await,
            vec![allowed.clone(); allowed.len() + 1]
        );
    }

    #[test]
    fn a_connection_stays_unless_its_worker_is_clearly_busier() {
        assert_eq!(pick(0, [0, 0].into_iter()), 0);
        assert_eq!(pick(1, [5, 7].into_iter()), 1);
        assert_eq!(pick(1, [5, 8].into_iter()), 0);
        assert_eq!(pick(0, [40, 30, 20, 37].into_iter()), 2);
        // The slack grows with the load: 1/16 of it.
        assert_eq!(pick(0, [322, 300].into_iter()), 0);
        assert_eq!(pick(0, [323, 300].into_iter()), 1);
    }

    #[test]
    fn an_unknown_worker_or_none_keeps_the_connection() {
        assert_eq!(pick(3, [9, 9].into_iter()), 3);
        assert_eq!(pick(0, std::iter::empty()), 0);
    }

    #[test]
    fn random_arrivals_stay_within_the_slack() {
        // Arrivals land on a worker at random (as the kernel's hash does); with `pick` no
        // worker ends more than the slack above the least loaded.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for workers in [2usize, 3, 8] {
            let mut load = vec![0usize; workers];
            for _ in 0..1000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let accepted = (seed % workers as u64) as usize;
                let to = pick(accepted, load.iter().copied());
                if let Some(n) = load.get_mut(to) {
                    *n += 1;
                }
            }
            let (min, max) = (load.iter().min(), load.iter().max());
            let (Some(&min), Some(&max)) = (min, max) else {
                panic!("no workers")
            };
            assert!(max - min <= 3 + max / 16, "{load:?}");
        }
    }
}
