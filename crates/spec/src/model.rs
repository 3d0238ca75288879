//! The validated pipeline model: what the rest of Airlock consumes.
//!
//! Every value here has passed validation; positions are kept where a later
//! stage (secret admission, say) must point back into the file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A position in the pipeline file, 1-based like editors show it.
pub use yamltree::Location;

/// A validated pipeline (version 1).
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Pipeline name: the `name` key, else the file stem (sanitised).
    pub name: String,
    /// Where the `name` key's value is, if the file has one.
    pub name_at: Option<Location>,
    /// The pipeline file as given on the command line.
    pub file: PathBuf,
    /// Environment for every job.
    pub env: BTreeMap<String, String>,
    /// Jobs in file order; `needs` only names ids present here, and the graph
    /// is acyclic.
    pub jobs: Vec<Job>,
}

/// One job: a sandbox in which steps run in order.
#[derive(Debug, Clone)]
pub struct Job {
    /// Job id, `[a-z0-9][a-z0-9_-]{0,63}`.
    pub id: String,
    /// Where the job's key is in the file.
    pub location: Location,
    /// Ids of jobs that must succeed first.
    pub needs: Vec<String>,
    /// The root file system the job sees.
    pub image: Image,
    /// Host directory mounted read-only at `/src` (absolute, canonical).
    pub source: PathBuf,
    /// Absolute path inside the sandbox of the writable workspace.
    pub workdir: String,
    /// Job environment (on top of the pipeline's).
    pub env: BTreeMap<String, String>,
    /// Secrets the job asks for.
    pub secrets: Vec<SecretRef>,
    /// Network the job declared.
    pub network: Network,
    /// Resource limits.
    pub resources: Resources,
    /// Steps, at least one.
    pub steps: Vec<Step>,
    /// Paths relative to `workdir`, copied out after the job.
    pub artifacts: Vec<String>,
}

/// Root file system of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// Host `/usr` (and the merged-usr links) read-only.
    Host,
    /// An OCI image reference (not runnable yet; accepted by the parser so
    /// that files written for later versions validate).
    Oci(String),
}

/// A secret a job asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// Secret name in the store.
    pub name: String,
    /// Also export it as this environment variable (opt-in).
    pub env: Option<String>,
    /// Where it is requested.
    pub location: Location,
}

/// Network a job declared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// Loopback only (the default).
    #[default]
    None,
    /// Egress through the proxy to these `host:port` patterns only.
    Egress(Vec<String>),
}

/// Resource limits of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    /// CPU quota in cores (e.g. 1.5).
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Maximum number of processes.
    pub pids: Option<u64>,
    /// Size of the workspace tmpfs in bytes.
    pub disk: u64,
    /// Wall-clock limit of the whole job.
    pub timeout: Duration,
}

/// Workspace size when the file names none.
pub const DEFAULT_DISK: u64 = 1 << 30;
/// Job timeout when the file names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Workdir when the file names none.
pub const DEFAULT_WORKDIR: &str = "/workspace";

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpus: None,
            memory: None,
            pids: None,
            disk: DEFAULT_DISK,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// One step: a shell script run with `/bin/sh -e -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Display name: the `name` key, else the first line of `run`.
    pub name: String,
    /// The script.
    pub run: String,
    /// Per-step wall-clock limit.
    pub timeout: Option<Duration>,
}

impl Pipeline {
    /// The job with this id.
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }
}
