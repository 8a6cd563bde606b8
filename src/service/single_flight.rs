//! In-process single flight: concurrent callers for one key share one execution.
//!
//! The execution is a task of its own, so it runs to its end even when every caller
//! has gone (an HTTP client that hangs up must not cancel a refresh halfway: the
//! provider may already have rotated the refresh token, and dropping its answer would
//! lose the grant).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type Flights<T> = Arc<Mutex<HashMap<String, Shared<BoxFuture<'static, T>>>>>;

pub struct SingleFlight<T> {
    inflight: Flights<T>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// Forgets a key's flight when its task ends, however it ends.
struct Landing<T> {
    inflight: Flights<T>,
    key: String,
}

impl<T> Drop for Landing<T> {
    fn drop(&mut self) {
        self.inflight
            .lock()
            .expect("single flight lock")
            .remove(&self.key);
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// Runs `work` for `key` unless it is already running, then every caller gets its
    /// result, and whether it was this caller that started it (`true`) or joined.
    pub async fn run<F>(&self, key: &str, work: impl FnOnce() -> F) -> (T, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (flight, led) = {
            let mut inflight = self.inflight.lock().expect("single flight lock");
            if let Some(existing) = inflight.get(key) {
                (existing.clone(), false)
            } else {
                let landing = Landing {
                    inflight: self.inflight.clone(),
                    key: key.to_owned(),
                };
                let work = work();
                let task = tokio::spawn(async move {
                    let _landing = landing;
                    work.await
                });
                let flight = async move {
                    task.await
                        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
                }
                .boxed()
                .shared();
                inflight.insert(key.to_owned(), flight.clone());
                (flight, true)
            }
        };
        (flight.await, led)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_execution_and_one_of_them_led_it() {
        let flights = SingleFlight::<usize>::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let calls = (0..10).map(|_| {
            let runs = runs.clone();
            flights.run("conn-1", move || async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                runs.fetch_add(1, Ordering::SeqCst) + 1
            })
        });
        let results = futures::future::join_all(calls).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "one execution for ten callers"
        );
        assert!(results.iter().all(|(n, _)| *n == 1), "{results:?}");
        assert_eq!(
            results.iter().filter(|(_, led)| *led).count(),
            1,
            "{results:?}"
        );
    }

    #[tokio::test]
    async fn the_execution_finishes_when_every_caller_has_gone() {
        let flights = SingleFlight::<()>::default();
        let finished = Arc::new(AtomicUsize::new(0));
        let done = finished.clone();
        let caller = flights.run("conn-1", move || async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            done.fetch_add(1, Ordering::SeqCst);
        });
        // The caller gives up (an HTTP client hung up) before the work is done.
        assert!(
            tokio::time::timeout(Duration::from_millis(5), caller)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the work ran to its end"
        );
        // And the key is free again: the next caller leads a new execution.
        let (_, led) = flights.run("conn-1", || async {}).await;
        assert!(led);
    }
}
