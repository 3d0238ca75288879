//! The seccomp-bpf deny list, kept as data in `resources/seccomp/` (one
//! entry per syscall, each with the reason it is denied), compiled to BPF at
//! build time by Firecracker's `seccompiler` (see `build.rs`).
//!
//! Two filters: `deny` returns EPERM for everything listed (a superset of
//! Docker's default profile); `deny_enosys` returns ENOSYS for `clone3`, so
//! libc falls back to `clone`, whose flags the first filter can inspect. A
//! guard in front of `deny` refuses x32 system call numbers, which would
//! otherwise reach the same kernel entry points under other numbers.
//!
//! A third filter, `watch_net`, denies nothing: it shows the runner every
//! call that can name a network destination (`connect`, `sendto` with an
//! address, `sendmsg`, `sendmmsg`) through a seccomp user-notification
//! listener, so that an attempt to bypass the egress proxy is an event (see
//! [`crate::netwatch`]). seccompiler has no user-notification action, so
//! the policy says `log` and [`watch_program`] turns each `log` return into
//! `user_notif`.

use seccompiler::{sock_filter, BpfProgram};

mod compiled {
    include!(concat!(env!("OUT_DIR"), "/seccomp.rs"));
}

/// The policy source, for tests and reports.
pub const POLICY_X86_64: &str = include_str!("../../../resources/seccomp/x86_64.json");

const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_DATA_NR_OFFSET: u32 = 0;

/// The filters to install, in order.
pub fn programs() -> Result<Vec<BpfProgram>, String> {
    if !compiled::AVAILABLE {
        return Err(format!(
            "no seccomp policy for {} yet (resources/seccomp/ has x86_64 only)",
            std::env::consts::ARCH
        ));
    }
    let mut deny = x32_guard();
    deny.extend(compiled::DENY.iter().map(instruction));
    let enosys = compiled::DENY_ENOSYS.iter().map(instruction).collect();
    Ok(vec![deny, enosys])
}

fn instruction(&(code, jt, jf, k): &(u16, u8, u8, u32)) -> sock_filter {
    sock_filter { code, jt, jf, k }
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

/// The `watch_net` filter, its matches returning `SECCOMP_RET_USER_NOTIF`.
pub fn watch_program() -> Result<BpfProgram, String> {
    if !compiled::AVAILABLE {
        return Err(format!(
            "no seccomp policy for {} yet",
            std::env::consts::ARCH
        ));
    }
    let ret_k = u16::try_from(libc::BPF_RET | libc::BPF_K).unwrap_or(0x06);
    let program: BpfProgram = compiled::WATCH_NET
        .iter()
        .map(instruction)
        .map(|mut i| {
            if i.code == ret_k && i.k == libc::SECCOMP_RET_LOG {
                i.k = libc::SECCOMP_RET_USER_NOTIF;
            }
            i
        })
        .collect();
    if !program
        .iter()
        .any(|i| i.code == ret_k && i.k == libc::SECCOMP_RET_USER_NOTIF)
    {
        return Err("the watch_net filter compiled without a match".into());
    }
    Ok(program)
}

/// Installs `program` on the calling thread and returns its notification
/// listener (close-on-exec). Requires no_new_privs.
pub(crate) fn apply_with_listener(program: &BpfProgram) -> Result<std::os::fd::OwnedFd, String> {
    use std::os::fd::FromRawFd;
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| "filter too long".to_string())?,
        filter: program.as_ptr().cast_mut().cast(),
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads `prog`, which points
    // at `program`'s instructions (sock_filter has the kernel's layout);
    // both outlive the call. The kernel copies the filter.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog,
        )
    };
    if fd < 0 {
        return Err(format!(
            "installing the network watch filter: {}",
            std::io::Error::last_os_error()
        ));
    }
    let fd = i32::try_from(fd).map_err(|_| "impossible fd".to_string())?;
    // SAFETY: the kernel just returned this new fd, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Installs the filters on the calling thread (inherited by every child).
/// Requires no_new_privs.
pub fn apply(programs: &[BpfProgram]) -> Result<(), String> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(|e| format!("installing a seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(serde::Deserialize)]
    struct Filter {
        filter: Vec<serde_json::Value>,
    }

    fn policy() -> HashMap<String, Filter> {
        serde_json::from_str(POLICY_X86_64).expect("policy is JSON")
    }

    #[test]
    fn compiled_policy_is_present_with_its_guard() {
        let programs = programs().expect("x86_64 policy");
        assert_eq!(programs.len(), 2);
        assert_eq!(programs[0][..3], x32_guard()[..]);
        assert!(
            programs[0].len() > 100,
            "{} instructions",
            programs[0].len()
        );
    }

    #[test]
    fn watch_filter_notifies_instead_of_logging() {
        let program = watch_program().expect("x86_64 policy");
        let ret_k = u16::try_from(libc::BPF_RET | libc::BPF_K).expect("fits");
        let returns: Vec<u32> = program
            .iter()
            .filter(|i| i.code == ret_k)
            .map(|i| i.k)
            .collect();
        assert!(
            returns.contains(&libc::SECCOMP_RET_USER_NOTIF),
            "{returns:x?}"
        );
        assert!(returns.contains(&libc::SECCOMP_RET_ALLOW), "{returns:x?}");
        assert!(!returns.contains(&libc::SECCOMP_RET_LOG), "{returns:x?}");
    }

    #[test]
    fn every_entry_has_a_reason() {
        for (name, f) in &policy() {
            for rule in &f.filter {
                let reason = rule.get("comment").and_then(|c| c.as_str()).unwrap_or("");
                assert!(reason.len() > 10, "{name}: {rule} has no reason");
            }
        }
    }

    #[test]
    fn no_syscall_is_listed_twice_without_arguments() {
        let mut seen = std::collections::HashSet::new();
        for f in policy().values() {
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
