//! The rules behind the routes and commands: what a valid connection is, what an edit
//! resets, how keys are made. Handlers and the CLI call these; these call the store.

pub mod connections;
pub mod keys;
