//! The integration tests, one module per area, in one binary: the crate links once.

mod common;

mod action;
mod batch_answers;
mod chart;
mod cli;
mod client;
mod credentials;
mod dangling;
mod emulator;
mod faults;
mod gcp_auth;
mod generate;
mod honest_counts;
mod hostile;
mod import;
mod import_failures;
mod import_input;
mod import_shards;
mod input_clashes;
mod input_reader;
mod load;
mod logs;
mod proxy;
mod redaction;
mod ship;
mod storage;
mod streams;
mod tag_search;
mod verify;
mod verify_via;
