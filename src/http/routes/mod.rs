//! The handlers, one module per resource of the contract.

pub mod callback;
pub mod connections;
pub mod credentials;
pub mod flows;
pub mod keys;
pub mod obo;
pub mod ops;
pub mod refresh;
pub mod workflows;
