//! In-process single flight: concurrent callers for one key share one execution.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

pub struct SingleFlight<T> {
    inflight: Arc<Mutex<HashMap<String, Shared<BoxFuture<'static, T>>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// Runs `work` for `key` unless it is already running, then every caller gets its result.
    pub async fn run<F>(&self, key: &str, work: impl FnOnce() -> F) -> T
    where
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let future = {
            let mut inflight = self.inflight.lock().expect("single flight lock");
            if let Some(existing) = inflight.get(key) {
                existing.clone()
            } else {
                let map = self.inflight.clone();
                let owned_key = key.to_owned();
                let work = work();
                let future = async move {
                    let result = work.await;
                    map.lock().expect("single flight lock").remove(&owned_key);
                    result
                }
                .boxed()
                .shared();
                inflight.insert(key.to_owned(), future.clone());
                future
            }
        };
        future.await
    }
}
