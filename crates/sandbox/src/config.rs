//! What the runner asks of a sandbox: its file system layout and the
//! commands to run in it. Sent to the sandbox init over the control socket.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The shape of one job's sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// Host name inside the UTS namespace.
    pub hostname: String,
    /// Host directory mounted read-only at `/src` (absolute, canonical).
    pub source: PathBuf,
    /// Absolute path of the writable workspace inside the sandbox.
    pub workdir: String,
    /// Size limit of the workspace tmpfs, in bytes.
    pub workspace_size: u64,
    /// Size limit of the `/tmp` tmpfs, in bytes.
    pub tmp_size: u64,
    /// Which hardening layers to apply (all by default).
    #[serde(default)]
    pub layers: Layers,
    /// Whether the job declared egress: the init then makes the egress
    /// proxy's sockets in the job's network namespace (see
    /// [`crate::EgressSockets`]) and points `/etc/resolv.conf` at the DNS
    /// responder. Without it the job has loopback and nothing else.
    #[serde(default)]
    pub egress: bool,
    /// The job's cgroup: its name and limits. `None` runs without one (a
    /// degraded mode the engine only chooses when the operator allowed it).
    #[serde(skip)]
    pub cgroup: Option<CgroupSpec>,
    /// Secrets to place at `/run/secrets/NAME` (an in-memory tmpfs, files
    /// mode 0400). Their values never enter a control message: each travels
    /// to the init in a sealed memfd.
    #[serde(skip)]
    pub secrets: Vec<SecretFile>,
}

/// A secret file for the job. Its value is zeroized on drop and never
/// printed.
#[derive(Clone)]
pub struct SecretFile {
    /// File name under `/run/secrets` (`[A-Za-z_][A-Za-z0-9_]*`).
    pub name: String,
    /// The value.
    pub value: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl PartialEq for SecretFile {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && *self.value == *other.value
    }
}

/// Whether `name` may name a file under `/run/secrets`.
pub fn valid_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// The cgroup of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupSpec {
    /// Directory name (see [`crate::cgroup::name_for`]).
    pub name: String,
    /// Limits.
    pub limits: crate::cgroup::Limits,
}

/// The hardening layers applied inside the sandbox on top of the namespaces
/// and the read-only root. All are on by default; turning one off is for
/// tests that prove the layer matters, and for an operator's explicit,
/// recorded choice of a degraded mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    /// The seccomp-bpf deny list (`resources/seccomp/`).
    pub seccomp: bool,
    /// Landlock file system rules and IPC scoping.
    pub landlock: bool,
    /// Drop every capability, lock root out of them, set no_new_privs.
    pub capabilities: bool,
    /// rlimits: core 0, nofile, nproc, fsize.
    pub rlimits: bool,
    /// Mask sensitive `/proc` files, make `/proc/sys` and friends read-only.
    pub proc_masking: bool,
}

impl Default for Layers {
    fn default() -> Self {
        Layers {
            seccomp: true,
            landlock: true,
            capabilities: true,
            rlimits: true,
            proc_masking: true,
        }
    }
}

impl Layers {
    /// Each layer with its name, for reports.
    pub fn named(&self) -> [(&'static str, bool); 5] {
        [
            ("seccomp", self.seccomp),
            ("landlock", self.landlock),
            ("capabilities", self.capabilities),
            ("rlimits", self.rlimits),
            ("proc_masking", self.proc_masking),
        ]
    }
}

/// One command to run inside a live sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandSpec {
    /// Program and arguments; `argv[0]` is an absolute path inside the sandbox.
    pub argv: Vec<String>,
    /// The whole environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: String,
}
