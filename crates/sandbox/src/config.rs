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
