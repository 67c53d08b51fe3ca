//! Admission: `parallel` generation slots, then a bounded FIFO queue with a timeout, then Busy.
//!
//! Invariants: at most `parallel` permits exist; at most `queue` requests wait at once; a waiter
//! that is cancelled (its future dropped) or times out leaves the queue immediately. Released
//! permits go to the longest waiter first (tokio's semaphore is fair), so a newcomer cannot
//! overtake the queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::LocalError;

/// Slots and queue of one engine.
#[derive(Debug)]
pub(super) struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    timeout: Duration,
    busy_total: AtomicU64,
}

/// Removes a waiter from the count however its wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    /// `parallel` slots, up to `queue` waiters, each waiting at most `timeout`.
    pub(super) fn new(parallel: usize, queue: usize, timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(parallel.min(Semaphore::MAX_PERMITS))),
            waiting: AtomicUsize::new(0),
            queue,
            timeout,
            busy_total: AtomicU64::new(0),
        }
    }

    /// Requests waiting for a slot now.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Requests refused as busy since start.
    pub(super) fn busy_total(&self) -> u64 {
        self.busy_total.load(Ordering::Relaxed)
    }

    /// A slot, after waiting in the queue if needed.
    pub(super) async fn admit(&self) -> Result<OwnedSemaphorePermit, LocalError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let reserved = self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.queue).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(self.busy());
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(LocalError::Unavailable {
                reason: "the local model is shutting down".into(),
            }),
            Err(_elapsed) => Err(self.busy()),
        }
    }

    /// The Busy error, with a retry hint: the queue timeout (how long a slot may take to free
    /// up), between 1 and 60 seconds.
    fn busy(&self) -> LocalError {
        self.busy_total.fetch_add(1, Ordering::Relaxed);
        let secs = self.timeout.as_secs_f64().ceil().clamp(1.0, 60.0) as u32;
        LocalError::Busy {
            retry_after_secs: secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_then_queue_then_busy() {
        let adm = Arc::new(Admission::new(1, 1, Duration::from_secs(5)));
        let first = adm.admit().await;
        assert!(first.is_ok());
        let waiter = tokio::spawn({
            let adm = adm.clone();
            async move { adm.admit().await.is_ok() }
        });
        while adm.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(adm.admit().await, Err(LocalError::Busy { .. })));
        drop(first);
        assert!(waiter.await.unwrap_or(false));
        assert_eq!(adm.waiting(), 0);
        assert_eq!(adm.busy_total(), 1);
    }

    #[tokio::test]
    async fn queue_wait_times_out_as_busy() {
        let adm = Admission::new(1, 4, Duration::from_millis(50));
        let _held = adm.admit().await;
        let err = adm.admit().await.err();
        assert_eq!(
            err,
            Some(LocalError::Busy {
                retry_after_secs: 1
            })
        );
        assert_eq!(adm.waiting(), 0);
    }

    #[tokio::test]
    async fn zero_queue_refuses_immediately() {
        let adm = Admission::new(1, 0, Duration::from_secs(3));
        let _held = adm.admit().await;
        assert!(matches!(adm.admit().await, Err(LocalError::Busy { .. })));
    }

    #[tokio::test]
    async fn cancelled_waiter_leaves_the_queue() {
        let adm = Admission::new(1, 1, Duration::from_secs(30));
        let _held = adm.admit().await;
        {
            let wait = adm.admit();
            tokio::pin!(wait);
            assert!(futures::poll!(wait.as_mut()).is_pending());
            assert_eq!(adm.waiting(), 1);
        }
        assert_eq!(adm.waiting(), 0);
    }
}
