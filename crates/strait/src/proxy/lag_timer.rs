//! A connection's timer that lags: hyper's request-head timeout for one HTTP/1 connection,
//! and the response timeout of its requests, without a timer-wheel update per request.
//!
//! hyper starts a fresh sleep (`Timer::sleep_until`) each time it waits for a request head
//! and drops it once the head is in, and a `tokio::time::timeout` around each request's wait
//! for its backend did the same: a wheel insert and removal (each under the wheel's lock)
//! per request, and — before the workers kept a timer anchored (see `workers.rs`) — a
//! self-wake through the runtime's eventfd for a third of keep-alive requests.
//!
//! [`LagTimer`] keeps one tokio sleep instead, and lets it lag: a new deadline later than
//! the armed one only records itself; when the armed sleep fires before the current
//! deadline, it is moved on to that deadline — once per timeout period at most, instead of
//! once per request. It never fires early. One waiter at a time: an HTTP/1 connection
//! waits for one head, or one response, at a time. Knows nothing of requests.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// One connection's timer: give each wait of an HTTP/1 connection (heads, responses) its own.
#[derive(Clone, Debug, Default)]
pub struct LagTimer {
    armed: Arc<Armed>,
}

/// The connection's one tokio sleep, made at the first wait (it needs the runtime).
#[derive(Debug, Default)]
pub struct Armed(Mutex<Option<Pin<Box<tokio::time::Sleep>>>>);

impl LagTimer {
    /// A wait until `deadline` that borrows the timer (no reference count to take and give
    /// back, as hyper's owned waits do); the previous wait must be over.
    pub fn wait_until(&self, deadline: tokio::time::Instant) -> Wait<&Armed> {
        Wait {
            deadline,
            armed: &self.armed,
        }
    }
}

impl Timer for LagTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(LagSleep {
            deadline: deadline.into(),
            armed: self.armed.clone(),
        })
    }

    /// tokio's clock, which tests can pause.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<LagSleep>() {
            Some(mut waiting) => waiting.deadline = new_deadline.into(),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// What a wait holds: its deadline, and the connection's sleep (`A`, owned or borrowed).
pub struct Wait<A> {
    deadline: tokio::time::Instant,
    armed: A,
}

/// A wait hyper owns.
pub type LagSleep = Wait<Arc<Armed>>;

impl Sleep for LagSleep {}

impl<A: Deref<Target = Armed> + Unpin> Future for Wait<A> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        // Only this connection's task polls it: the lock is never contended.
        let mut armed = self.armed.0.lock().unwrap_or_else(PoisonError::into_inner);
        let sleep = armed.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if sleep.deadline() > deadline {
                // An earlier deadline than the armed one (a response timeout shorter than
                // the last request's, or hyper's head timeout after it): move the sleep back.
                sleep.as_mut().reset(deadline);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if sleep.deadline() >= deadline {
                return Poll::Ready(());
            }
            // Fired for an older, earlier deadline: catch up with this one.
            sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn at(from_now: Duration) -> Instant {
        (tokio::time::Instant::now() + from_now).into_std()
    }

    /// Polls `sleep` once: whether it is done.
    async fn done(sleep: &mut Pin<Box<dyn Sleep>>) -> bool {
        poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_its_deadline_not_before() {
        let timer = LagTimer::default();
        let mut sleep = timer.sleep(Duration::from_secs(30));
        assert!(!done(&mut sleep).await);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!done(&mut sleep).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(done(&mut sleep).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_sleep_outlives_the_armed_deadline_it_reuses() {
        let timer = LagTimer::default();
        let mut first = timer.sleep(Duration::from_secs(30));
        assert!(!done(&mut first).await);
        drop(first);
        // The next request's wait starts 20 s later: its deadline is 50 s from the start.
        tokio::time::advance(Duration::from_secs(20)).await;
        let mut second = timer.sleep_until(at(Duration::from_secs(30)));
        assert!(!done(&mut second).await);
        // The armed sleep (30 s) fires: the waiting future is woken and re-arms.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!done(&mut second).await);
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(!done(&mut second).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(done(&mut second).await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_woken_when_the_deadline_passes() {
        let timer = LagTimer::default();
        // The connection's sleep is armed for 5 s, then a wait with a later deadline starts.
        let mut early = timer.sleep(Duration::from_secs(5));
        assert!(!done(&mut early).await);
        drop(early);
        let sleep = timer.sleep(Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        // Woken by the timer alone (the clock auto-advances while the runtime idles): at 5 s
        // the armed sleep fires and moves on, at 10 s it ends the wait.
        let woken = tokio::time::timeout(Duration::from_secs(60), sleep).await;
        assert!(woken.is_ok(), "the wait was never woken");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn reset_moves_the_deadline_either_way() {
        let timer = LagTimer::default();
        let mut sleep = timer.sleep(Duration::from_secs(30));
        assert!(!done(&mut sleep).await);
        timer.reset(&mut sleep, at(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(done(&mut sleep).await);
        timer.reset(&mut sleep, at(Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!done(&mut sleep).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(done(&mut sleep).await);
    }

    /// Sends one GET on `io` and reads its (bodyless) answer.
    async fn get(io: &mut tokio::io::DuplexStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        io.write_all(b"GET / HTTP/1.1\r\nhost: strait\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\n") {
            let mut byte = [0; 1];
            assert_eq!(
                io.read(&mut byte).await.unwrap(),
                1,
                "connection closed early"
            );
            answer.extend_from_slice(&byte);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"));
    }

    /// hyper with this timer: a keep-alive connection waiting for its next head is closed
    /// a head timeout after its last request, not after its first.
    #[tokio::test(start_paused = true)]
    async fn hyper_closes_an_idle_connection_a_timeout_after_its_last_request() {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let (mut client, server) = tokio::io::duplex(4096);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(LagTimer::default())
            .header_read_timeout(Duration::from_secs(30));
        let service = service_fn(|_| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        });
        let started = tokio::time::Instant::now();
        let conn = tokio::spawn(http1.serve_connection(TokioIo::new(server), service));
        get(&mut client).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        get(&mut client).await;
        let ended = tokio::time::timeout(Duration::from_secs(120), conn).await;
        let error = ended.unwrap().unwrap().unwrap_err();
        assert!(error.is_timeout(), "{error}");
        let open = started.elapsed();
        assert!(
            (Duration::from_secs(50)..Duration::from_millis(50_010)).contains(&open),
            "closed after {open:?}"
        );
    }
}
