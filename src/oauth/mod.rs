//! Calls to OAuth providers: the token requests of every grant (through the `oauth2`
//! crate, over our own retrying, address-checking HTTP client), and the classification
//! of their failures into permanent and transient.

mod client;
mod error;
mod jwt;
mod obo;
mod outbound;
mod token;

pub use client::{AuthorizationStart, ProviderClient};
pub use error::{ProviderError, sanitize};
pub use jwt::{JwksCache, JwtError, downstream_resources, unverified_audiences};
pub use obo::{OboError, OboExchange};
pub use outbound::{Outbound, OutboundConfig};
pub use token::{LenientTokenResponse, MAX_EXPIRES_IN, TokenSet};

// For the parser fuzz tests (`tests/fuzz_parsers.rs`), not an API: the reader of
// on-behalf-of replies, and the error type their fake HTTP client returns.
#[doc(hidden)]
pub use obo::read_reply as read_obo_reply;
#[doc(hidden)]
pub use outbound::TransportError;
