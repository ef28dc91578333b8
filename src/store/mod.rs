//! The store client that `load` and `verify` share: which store (`target`) and how it is set up
//! (`preflight`), the credentials (`auth`), and the HTTP `client` that passes the `limiter`
//! riding the store's quota, retries what may heal (`retry`) and counts what it did (`stats`).

pub mod auth;
pub mod client;
pub mod limiter;
pub mod preflight;
pub mod retry;
pub mod stats;
pub mod target;
