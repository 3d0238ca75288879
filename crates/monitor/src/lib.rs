//! Airlock's runtime monitoring: what a job does becomes an
//! [`Observation`]; detection rules (data files in `resources/rules/`)
//! turn observations into alerts; baselines tell what is new for a job;
//! alerts are delivered to a webhook and a command hook.
//!
//! This crate is pure policy, but for [`notify`]: it makes no kernel calls.
//! The sandbox crate collects execs, cgroup samples and containment; the
//! engine feeds the observations in and carries out a rule's action.
//! [`notify`] delivers alerts, so it opens connections and runs the
//! operator's hook.

// Tests may unwrap: a panic there is a failed test.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod notify;
pub mod observation;
pub mod rules;

pub use observation::{clip, FieldType, Kind, Observation, Value};
pub use rules::{Action, Position, Rule, RuleError, Rules, Severity};
