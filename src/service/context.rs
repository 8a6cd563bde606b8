//! The service context: one `Broker` per process, which every service call takes.

use std::sync::Arc;

use crate::clock::DynClock;
use crate::config::Settings;
use crate::oauth::{Outbound, OutboundConfig, ProviderClient};
use crate::store::DynStore;

use super::in_process::{FlightOutcome, OboCaches, ReadLog, RefresherState};
use super::single_flight::SingleFlight;

/// Everything a service call needs: the store, the clock, the settings, the provider
/// client, and the in-process state that makes one replica behave (single flights,
/// caches, the refresher's run). One per process, shared by the HTTP workers, the
/// refresher and the command line.
pub struct Broker {
    pub store: DynStore,
    pub clock: DynClock,
    pub settings: Settings,
    /// Base of `redirect_uri` and links, without a trailing slash.
    pub public_base: String,
    /// This process, as a lease owner.
    pub replica_id: String,
    pub provider: ProviderClient,
    /// Connection refreshes in flight in this process, one per connection.
    pub(crate) refreshes: SingleFlight<FlightOutcome>,
    /// On-behalf-of exchanges: JWKS, the token cache, session refreshes.
    pub(crate) obo: OboCaches,
    /// Which credentials reads were recorded lately, and the writes recording them.
    pub(crate) reads: ReadLog,
    pub refresher: RefresherState,
}

impl Broker {
    pub fn new(
        store: DynStore,
        clock: DynClock,
        settings: Settings,
        public_base: String,
    ) -> Arc<Self> {
        let outbound = Arc::new(Outbound::new(OutboundConfig::from_settings(&settings)));
        Arc::new(Self {
            store,
            clock,
            public_base,
            replica_id: uuid::Uuid::new_v4().simple().to_string(),
            provider: ProviderClient::new(outbound.clone()),
            refreshes: SingleFlight::default(),
            obo: OboCaches::new(outbound),
            reads: ReadLog::default(),
            refresher: RefresherState::default(),
            settings,
        })
    }

    /// The absolute callback URL of a connection.
    pub fn redirect_uri(&self, connection_name: &str) -> String {
        format!("{}/api/oauth/callback/{connection_name}", self.public_base)
    }
}
