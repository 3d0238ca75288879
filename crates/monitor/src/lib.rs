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

pub mod notify;
pub mod observation;

pub use observation::{Kind, Observation, Value};
