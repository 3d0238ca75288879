//! Landlock: file system access rules matching the mount layout, and IPC
//! scoping (no abstract unix sockets or signals outside the job).
//!
//! The mount layout already makes most of the tree read-only; Landlock is
//! the second, independent wall: even a mount trick that the seccomp filter
//! missed would not let the job write outside its writable places or
//! execute from them where the layout says read-only.

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};

use crate::config::SandboxConfig;

/// The newest ABI this code knows; older kernels get what they support.
const ABI_WANTED: ABI = ABI::V6;

/// Restricts the calling process (and its future children) to the job's
/// tree. Fails unless the kernel enforces at least the file system rules.
pub(crate) fn apply(config: &SandboxConfig) -> Result<(), String> {
    let all = AccessFs::from_all(ABI_WANTED);
    let read = AccessFs::from_read(ABI_WANTED);
    let read_write_files = read | AccessFs::WriteFile | AccessFs::Truncate;
    let writable: Vec<&str> = vec![config.workdir.as_str(), "/tmp", "/dev/shm"];
    let status = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(|r| r.create())
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                ["/usr", "/etc", "/src", "/proc", "/run"],
                read,
            ))
        })
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], AccessFs::ReadDir)))
        .and_then(|r| r.add_rules(path_beneath_rules(["/dev"], read_write_files)))
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                [crate::rootfs::MASK_PATH],
                AccessFs::WriteFile,
            ))
        })
        .and_then(|r| r.add_rules(path_beneath_rules(writable, all)))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock: {e}"))?;
    match status.ruleset {
        RulesetStatus::FullyEnforced | RulesetStatus::PartiallyEnforced => Ok(()),
        RulesetStatus::NotEnforced => Err("landlock is not enforced by this kernel".into()),
    }
}
