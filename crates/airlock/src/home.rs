//! The state directory: `--home`, else `$AIRLOCK_HOME`, else
//! `/var/lib/airlock` for root and `$XDG_DATA_HOME/airlock` otherwise.

use std::path::PathBuf;

use anyhow::{bail, Result};

/// Resolves the state directory.
pub fn resolve(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(home) = flag {
        return Ok(home);
    }
    if let Some(home) = std::env::var_os("AIRLOCK_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/airlock"));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(data).join("airlock"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/airlock")),
        None => bail!("cannot find a state directory: set --home or AIRLOCK_HOME"),
    }
}
