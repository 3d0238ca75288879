//! Airlock's local files, shared by the crates that keep state on disk
//! (`state`, `secrets`, `audit`): [`fs`], private directories and files
//! (0700 and 0600) and durable atomic writes; [`time`], wall-clock
//! timestamps in milliseconds, written as RFC 3339 UTC; and, with the
//! `sqlite` feature, `sqlite`: what both Airlock databases do alike when
//! they open (the switch to WAL).
#![deny(missing_docs)]

pub mod fs;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod time;

pub use time::Timestamp;
