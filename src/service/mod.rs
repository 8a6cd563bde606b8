//! The rules of the broker, below HTTP: what a valid connection is, what an edit
//! resets, how tokens are obtained, refreshed and recorded, how keys are made, the
//! refresher. `http` and the command line call these with a `Broker`; these call the
//! store and the provider client, and answer with `Error`, never an HTTP type.

pub mod authorization;
pub mod connections;
mod context;
pub mod credentials;
mod error;
pub mod grants;
mod in_process;
pub mod keys;
pub mod obo;
pub mod refresh;
pub mod refresher;
pub mod retention;
mod single_flight;
#[cfg(test)]
mod test_support;
pub mod testing;
pub mod workflows;

pub use context::Broker;
pub use error::{Error, NoToken, OboFailure, Result};
pub use in_process::{FlightOutcome, OboToken};
pub use single_flight::SingleFlight;
