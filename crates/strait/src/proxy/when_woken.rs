//! A future polled only once it has woken its task: for the stop signals every connection
//! waits on beside its work (the gateway's shutdown token, an HTTP/2 connection's idle
//! timer). Polled at every wake-up of a connection, as `select!` does, a waiting token
//! future takes the lock of the token's waiter list — one list for every connection of
//! every worker thread — to compare wakers. Used by the listener only.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// `future`, looked at on the first poll and then only after it woke the task.
pub struct WhenWoken<'a, F> {
    future: Pin<&'a mut F>,
    flag: Arc<Flag>,
    waker: Waker,
    /// The task waker `flag` holds, until `future` wakes it (which takes it).
    registered: Option<Waker>,
}

/// The waker `future` gets: notes that it fired, then wakes the task.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<'a, F: Future> WhenWoken<'a, F> {
    pub fn new(future: Pin<&'a mut F>) -> Self {
        // Woken to begin with: the first poll gives `future` its waker.
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        Self {
            future,
            flag,
            waker,
            registered: None,
        }
    }
}

impl<F: Future> Future for WhenWoken<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Not woken, and the flag still holds this task's waker: nothing to do, and no
        // atomic read-modify-write (three of them per poll otherwise, ~5 ns each).
        if !this.flag.woken.load(Ordering::Acquire)
            && this
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        // Registered before the flag is read: a wake in between is not lost.
        this.flag.task.register(cx.waker());
        if this
            .registered
            .as_ref()
            .is_none_or(|w| !w.will_wake(cx.waker()))
        {
            this.registered = Some(cx.waker().clone());
        }
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.future
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set and it is polled.
    struct Probe<'a> {
        polls: &'a AtomicUsize,
        ready: &'a AtomicBool,
        waker: &'a std::sync::Mutex<Option<Waker>>,
    }

    impl Future for Probe<'_> {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.ready.load(Ordering::Relaxed) {
                return Poll::Ready(());
            }
            if let Ok(mut waker) = self.waker.lock() {
                *waker = Some(cx.waker().clone());
            }
            Poll::Pending
        }
    }

    /// Polls `stop` once: whether it is ready.
    async fn polled<F: Future>(stop: &mut WhenWoken<'_, F>) -> bool {
        poll_fn(|cx| Poll::Ready(Pin::new(&mut *stop).poll(cx).is_ready())).await
    }

    #[tokio::test]
    async fn polls_the_future_first_and_then_only_after_it_woke() {
        let (polls, ready) = (AtomicUsize::new(0), AtomicBool::new(false));
        let waker = std::sync::Mutex::new(None);
        let probe = std::pin::pin!(Probe {
            polls: &polls,
            ready: &ready,
            waker: &waker,
        });
        let mut stop = WhenWoken::new(probe);
        assert!(!polled(&mut stop).await);
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // Woken by something else (the connection's work): the future is not looked at.
        assert!(!polled(&mut stop).await);
        assert!(!polled(&mut stop).await);
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // It fires: the next poll looks at it and finds it ready.
        ready.store(true, Ordering::Relaxed);
        let fired = waker.lock().unwrap().take().unwrap();
        fired.wake();
        assert!(polled(&mut stop).await);
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_token_cancelled_while_waiting_wakes_the_task() {
        let token = tokio_util::sync::CancellationToken::new();
        let cancelled = std::pin::pin!(token.cancelled());
        let stop = WhenWoken::new(cancelled);
        let cancel = token.clone();
        tokio::spawn(async move { cancel.cancel() });
        // Ends only if the cancellation reached this task through the flag's waker.
        tokio::time::timeout(std::time::Duration::from_secs(10), stop)
            .await
            .expect("the cancellation never woke the wait");
    }
}
