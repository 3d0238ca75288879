//! Kernel isolation for one job: namespaces, the job's root file system, the
//! sandbox init, command execution and teardown. Every kernel call of Airlock
//! lives in this crate.
//!
//! A [`Sandbox`] is a process tree in fresh user, pid, mount, UTS, IPC,
//! network and cgroup namespaces. Its pid 1 is the Airlock binary re-executed
//! as the sandbox init ([`run_if_init`] must be the first call in `main` of
//! any binary that creates sandboxes). The runner sends it commands over a
//! control socket; each command's output comes back through a pipe.
//!
//! What a job does can be watched from outside it: every exec
//! ([`Sandbox::watch_execs`], see [`procwatch`]), every attempt to reach
//! the network ([`Sandbox::on_network_attempt`]), and what its cgroup has
//! used ([`Sandbox::sample`]). A [`Killer`] stops a job from another thread,
//! and can contain it: freeze it, record its processes, kill them
//! ([`Killer::contain`], see [`contain`]).
#![deny(missing_docs)]

pub mod artifacts;
mod caps;
pub mod cgroup;
mod config;
pub mod contain;
pub mod doctor;
mod error;
pub mod ids;
mod init;
mod landlock;
mod netns;
mod netwatch;
mod perfwatch;
mod procfs;
pub mod procwatch;
mod proto;
pub mod rlimits;
mod rootfs;
pub mod seccomp;
mod spawn;
mod teardown;

pub use cgroup::Sample;
pub use config::{valid_secret_name, CgroupSpec, CommandSpec, Layers, SandboxConfig, SecretFile};
pub use contain::ProcessInfo;
pub use error::SandboxError;
pub use init::{run_if_init, INIT_ARGV0};
pub use netns::{EgressSockets, DNS_ADDR, PROXY_ADDR};
pub use netwatch::Attempt;
pub use procwatch::{ExecEvent, ExecSink, ExecSource};
pub use proto::MAX_MESSAGE;
pub use rootfs::MASK_PATH;
pub use spawn::{
    AttemptSink, CommandOutcome, IdMode, Killer, MaskChannel, Output, Sandbox, Spare, IDLE_TICK,
    NOBODY, READ_CHUNK,
};
pub use teardown::TeardownReport;
