//! The job engine: admission, planning, scheduling, and running each job in
//! its sandbox, with every step of the way published as an [`Event`].
//!
//! Data flows one way: `spec::Pipeline` -> [`plan::JobPlan`] -> sandbox ->
//! output bytes -> lines -> subscribers (run record, log files, terminal).
#![deny(missing_docs)]

pub mod audit;
mod error;
mod event;
mod job;
mod masks;
mod output;
pub mod plan;
mod record;
mod run;
mod spares;
mod watch;

pub use audit::AuditTrail;
pub use error::{EngineError, Refusal};
pub use event::{Bus, Event, Line, Subscriber};
pub use job::JobOutcome;
pub use output::Lines;
pub use record::LogFiles;
pub use run::{
    run, JobReport, RunOptions, RunReport, DEFAULT_MAX_OUTPUT, EXIT_BAD_INPUT, EXIT_INTERNAL,
    EXIT_JOB_FAILED, EXIT_OK, EXIT_REFUSED,
};
pub use spares::Spares;
