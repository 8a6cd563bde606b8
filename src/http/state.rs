//! What every handler shares: the service context, and what only HTTP needs (the API
//! key cache, refused-authentication counts, request metrics, the rate limit).

use std::sync::Arc;

use super::auth::{FailedAuths, KeyCache, RateLimit};
use super::metrics::Metrics;
use crate::service::Broker;

pub struct AppState {
    pub broker: Arc<Broker>,
    pub keys: KeyCache,
    /// Refused authentications, counted to log bursts.
    pub failed_auths: FailedAuths,
    pub metrics: Arc<Metrics>,
    pub rate_limit: RateLimit,
}

impl AppState {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self {
            rate_limit: RateLimit::per_minute(broker.settings.rate_limit_per_minute),
            broker,
            keys: KeyCache::default(),
            failed_auths: FailedAuths::default(),
            metrics: Arc::new(Metrics::default()),
        }
    }
}
