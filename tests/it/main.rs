//! The integration tests, one module per area, in one binary: the crate links once.

mod common;

mod action;
mod chart;
mod cli;
mod client;
mod credentials;
mod emulator;
mod faults;
mod gcp_auth;
mod generate;
mod hostile;
mod input_reader;
mod load;
mod logs;
mod proxy;
mod ship;
mod verify;
