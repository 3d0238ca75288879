//! The seccomp-bpf deny list, kept as data in `resources/seccomp/` (one
//! entry per syscall, each with the reason it is denied) and compiled with
//! Firecracker's `seccompiler`.
//!
//! Two filters: `deny` returns EPERM for everything listed (a superset of
//! Docker's default profile); `deny_enosys` returns ENOSYS for `clone3`, so
//! libc falls back to `clone`, whose flags the first filter can inspect. A
//! guard in front of `deny` refuses x32 system call numbers, which would
//! otherwise reach the same kernel entry points under other numbers.

use std::collections::HashMap;

use seccompiler::{sock_filter, BpfProgram, TargetArch};

/// The policy for x86_64.
pub const POLICY_X86_64: &str = include_str!("../../../resources/seccomp/x86_64.json");

/// Filter names in the order they are installed.
const FILTERS: [&str; 2] = ["deny", "deny_enosys"];

const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_DATA_NR_OFFSET: u32 = 0;

/// Compiles the policy for this machine.
pub fn compile() -> Result<Vec<BpfProgram>, String> {
    if std::env::consts::ARCH != "x86_64" {
        return Err(format!(
            "no seccomp policy for {} yet (resources/seccomp/ has x86_64 only)",
            std::env::consts::ARCH
        ));
    }
    let mut map: HashMap<String, BpfProgram> =
        seccompiler::compile_from_json(POLICY_X86_64.as_bytes(), TargetArch::x86_64)
            .map_err(|e| format!("compiling resources/seccomp/x86_64.json: {e}"))?;
    let mut programs = Vec::with_capacity(FILTERS.len());
    for name in FILTERS {
        let program = map
            .remove(name)
            .ok_or_else(|| format!("resources/seccomp/x86_64.json has no filter {name:?}"))?;
        programs.push(program);
    }
    if let Some(deny) = programs.first_mut() {
        let mut guarded = x32_guard();
        guarded.append(deny);
        *deny = guarded;
    }
    Ok(programs)
}

/// `if (nr & X32_SYSCALL_BIT) return ERRNO(ENOSYS);` — placed before the
/// architecture check, which is harmless: any other architecture is killed
/// by that check anyway.
fn x32_guard() -> Vec<sock_filter> {
    let errno = u32::try_from(libc::ENOSYS).unwrap_or(38);
    vec![
        sock_filter {
            code: u16::try_from(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS).unwrap_or(0x20),
            jt: 0,
            jf: 0,
            k: SECCOMP_DATA_NR_OFFSET,
        },
        sock_filter {
            code: u16::try_from(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K).unwrap_or(0x45),
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: u16::try_from(libc::BPF_RET | libc::BPF_K).unwrap_or(0x06),
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | errno,
        },
    ]
}

/// Installs the compiled filters on the calling thread (inherited by every
/// child). Requires no_new_privs.
pub fn apply(programs: &[BpfProgram]) -> Result<(), String> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(|e| format!("installing a seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Filter {
        filter: Vec<serde_json::Value>,
    }

    #[test]
    fn policy_compiles_and_every_entry_has_a_reason() {
        let programs = compile().expect("policy compiles");
        assert_eq!(programs.len(), 2);
        let doc: HashMap<String, Filter> =
            serde_json::from_str(POLICY_X86_64).expect("policy is JSON");
        for (name, f) in &doc {
            for rule in &f.filter {
                let reason = rule.get("comment").and_then(|c| c.as_str()).unwrap_or("");
                assert!(reason.len() > 10, "{name}: {rule} has no reason");
            }
        }
    }

    #[test]
    fn no_syscall_is_listed_twice_without_arguments() {
        let doc: HashMap<String, Filter> =
            serde_json::from_str(POLICY_X86_64).expect("policy is JSON");
        let mut seen = std::collections::HashSet::new();
        for f in doc.values() {
            for rule in &f.filter {
                if rule.get("args").is_none() {
                    let name = rule["syscall"].as_str().unwrap_or_default().to_string();
                    assert!(
                        seen.insert(name.clone()),
                        "{name} is listed twice: redundant"
                    );
                }
            }
        }
    }
}
