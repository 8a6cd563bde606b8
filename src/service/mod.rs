//! The rules behind the routes and commands: what a valid connection is, what an edit
//! resets, how tokens are obtained and recorded, how keys are made. Handlers and the
//! CLI call these; these call the store and the provider client.

pub mod authorization;
pub mod connections;
pub mod credentials;
pub mod grants;
pub mod keys;
pub mod obo;
