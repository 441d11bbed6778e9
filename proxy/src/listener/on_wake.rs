//! A side future of a connection's task (the watches that may end the connection: drain, retirement, idleness)
//! polled only when one of its own wakers fired, not on every wake of the task. The task is woken for every read
//! and write of the connection; polling the watches each time (a watch channel's notification, a timer entry)
//! cost about as many instructions per request as routing it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Remembers whether the side future was woken since it was last polled; one per connection.
pub struct OnWake {
    flag: Arc<Flag>,
    /// The waker the side future is polled with: sets the flag, then wakes the task.
    waker: Waker,
}

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

impl OnWake {
    pub fn new() -> Self {
        let flag = Arc::new(Flag { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        Self { waker: Waker::from(flag.clone()), flag }
    }

    /// The next `poll` polls its future whatever woke the task: a new side future has not registered its wakers.
    pub fn arm(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }

    /// Polls `fut` if it was woken since its last poll (or `arm` was called); otherwise it is still pending.
    pub fn poll<F: Future>(&self, fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Before the flag is read: a wake after the read reaches this task.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        fut.poll(&mut Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its polls; ready once `ready` is set, and wakes its last waker when told to.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: std::sync::Mutex<Option<Waker>>,
    }

    struct ProbeFuture(Arc<Probe>);

    impl Future for ProbeFuture {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut w) = self.0.waker.lock() {
                *w = Some(cx.waker().clone());
            }
            if self.0.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Probe {
        fn wake(&self) {
            if let Some(w) = self.waker.lock().ok().and_then(|mut w| w.take()) {
                w.wake();
            }
        }
    }

    /// A waker that counts how often the task was woken.
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn polls_the_side_future_only_after_its_own_wake_and_passes_the_wake_to_the_task() {
        let on_wake = OnWake::new();
        let probe = Arc::new(Probe::default());
        let mut fut = std::pin::pin!(ProbeFuture(probe.clone()));
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);

        // First poll: polled, so it can register its wakers.
        assert!(on_wake.poll(fut.as_mut(), &mut cx).is_pending());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1);
        // The task woken for something else: not polled again.
        for _ in 0..3 {
            assert!(on_wake.poll(fut.as_mut(), &mut cx).is_pending());
        }
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1);
        // Its own waker fired: the task is woken, and the next poll polls it.
        probe.ready.store(true, Ordering::SeqCst);
        probe.wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(on_wake.poll(fut.as_mut(), &mut cx).is_ready());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn arm_polls_a_new_side_future_at_once() {
        let on_wake = OnWake::new();
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let waker = Waker::from(task);
        let mut cx = Context::from_waker(&waker);
        let first = Arc::new(Probe::default());
        assert!(on_wake.poll(std::pin::pin!(ProbeFuture(first.clone())), &mut cx).is_pending());
        let second = Arc::new(Probe::default());
        let mut fut = std::pin::pin!(ProbeFuture(second.clone()));
        on_wake.arm();
        assert!(on_wake.poll(fut.as_mut(), &mut cx).is_pending());
        assert_eq!(second.polls.load(Ordering::SeqCst), 1);
    }
}
