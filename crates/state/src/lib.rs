//! The run record: every run, its jobs and their steps, with status,
//! timings, exit codes and log paths, in an SQLite database in the state
//! home.
//!
//! ```text
//! <home>/            0700
//!   state.db         0600, WAL mode (state.db-wal, state.db-shm beside it)
//!   runs/<id>/       0700, one directory per run for logs and artifacts
//! ```
//!
//! A crash never leaves a half-written record: every change of more than one
//! row is one transaction. One [`Store`] is shared by the threads of a runner
//! (one per running job), and several `airlock` processes may use the same
//! home at once; SQLite's WAL mode and a 5 s busy timeout serialize their
//! writes. A run whose runner died without finishing it is found and marked
//! [`Status::Lost`] by [`Store::recover_lost_runs`].
#![deny(missing_docs)]

mod error;
mod fs;
mod model;
mod monitoring;
mod process;
mod schema;
mod store;
mod time;

pub use error::StateError;
pub use model::{
    Egress, JobEnd, JobRecord, NewJob, NewRun, OutputCut, ParseStatusError, RunId, RunRecord,
    RunSummary, Status, StepRecord,
};
pub use monitoring::{Alert, Baseline, FileChange, Incident, Process, MAX_BASELINE_VALUES};
pub use store::Store;
pub use time::Timestamp;
