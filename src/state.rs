//! What every handler shares: the store, the clock, settings and caches.

use std::sync::Arc;

use crate::auth::{FailedAuths, KeyCache};
use crate::clock::DynClock;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::store::DynStore;

pub struct AppState {
    pub store: DynStore,
    pub clock: DynClock,
    pub settings: Settings,
    /// Base of `redirect_uri`, without a trailing slash.
    pub public_base: String,
    pub keys: KeyCache,
    /// Refused authentications, counted to log bursts.
    pub failed_auths: FailedAuths,
    pub metrics: Arc<Metrics>,
    pub provider: crate::oauth::ProviderClient,
    /// In-process single flight of refreshes.
    pub refreshes:
        crate::service::credentials::SingleFlight<crate::service::credentials::FlightOutcome>,
    /// On-behalf-of exchanges: JWKS, the token cache, session refreshes.
    pub obo: crate::service::obo::Obo,
    /// This process, as a lease owner.
    pub replica_id: String,
    pub refresher: crate::refresher::Refresher,
    pub read_events: crate::routes::credentials::ReadEvents,
    pub rate_limit: crate::auth::RateLimit,
}

impl AppState {
    /// The absolute callback URL of a connection.
    pub fn redirect_uri(&self, connection_name: &str) -> String {
        format!("{}/api/oauth/callback/{connection_name}", self.public_base)
    }
}
