//! `airlock doctor`: which isolation layers this host supports, how, or why
//! not. Every answer comes from trying: the kernel interfaces are probed,
//! and a real sandbox with every layer runs `/bin/true`.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cgroup::{self, Limits};
use crate::config::{CommandSpec, Layers, SandboxConfig};
use crate::spawn::{CommandOutcome, Output, Sandbox};

/// One layer's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Layer name.
    pub layer: &'static str,
    /// Whether jobs get it on this host.
    pub ok: bool,
    /// How it is provided, or why not.
    pub detail: String,
}

/// Probes every layer: what the kernel offers, then what a job in a test
/// sandbox actually gets (one line per layer; a layer checked both ways
/// must pass both).
pub fn checks() -> Vec<Check> {
    let mut out = vec![
        mode(),
        user_namespaces(),
        seccomp(),
        landlock(),
        cgroups(),
        exec_watch(),
    ];
    for verified in whole_sandbox() {
        match out.iter_mut().find(|c| c.layer == verified.layer) {
            Some(c) => {
                c.ok &= verified.ok;
                c.detail = format!("{}; {}", c.detail, verified.detail);
            }
            None => out.push(verified),
        }
    }
    out
}

fn check(layer: &'static str, result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check {
            layer,
            ok: true,
            detail,
        },
        Err(detail) => Check {
            layer,
            ok: false,
            detail,
        },
    }
}

fn mode() -> Check {
    let detail = if rustix::process::geteuid().is_root() {
        format!(
            "privileged (root): each job's root maps to its own host uid/gid from {} ({} slots)",
            crate::ids::BASE,
            crate::ids::SLOTS
        )
    } else {
        "rootless: each job's root maps to the invoking user".into()
    };
    check("mode", Ok(detail))
}

fn user_namespaces() -> Check {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
    let result = match read("/proc/sys/user/max_user_namespaces") {
        Ok(n) if n == "0" => Err("user.max_user_namespaces is 0".to_string()),
        Ok(n) => {
            let unpriv = read("/proc/sys/kernel/unprivileged_userns_clone").ok();
            if !rustix::process::geteuid().is_root() && unpriv.as_deref() == Some("0") {
                Err("kernel.unprivileged_userns_clone is 0: rootless mode needs it".into())
            } else {
                Ok(format!(
                    "user, pid, mount, uts, ipc, net, cgroup (max_user_namespaces {n})"
                ))
            }
        }
        Err(e) => Err(format!(
            "cannot read /proc/sys/user/max_user_namespaces: {e}"
        )),
    };
    check("namespaces", result)
}

/// How the monitor will see a job's execs. Polling still monitors, so it
/// is not a failure, but it says what it misses.
fn exec_watch() -> Check {
    let detail = match crate::procwatch::available_source() {
        (crate::ExecSource::Perf, _) => {
            "exec events recorded by the kernel through perf events (every exec, with its arguments)"
                .into()
        }
        (crate::ExecSource::Connector, why) => format!(
            "exec events from the kernel's process-events connector (every exec; arguments read from /proc right after): {}",
            why.join("; ")
        ),
        (crate::ExecSource::Polling, why) => format!(
            "exec events by polling /proc every {} ms (processes shorter than that are missed): {}",
            crate::procwatch::POLL_INTERVAL.as_millis(),
            why.join("; ")
        ),
    };
    check("exec_watch", Ok(detail))
}

fn seccomp() -> Check {
    let result = match std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail") {
        Ok(actions) if actions.split_whitespace().any(|a| a == "errno") => crate::seccomp::programs()
            .map(|programs| {
                let instructions: usize = programs.iter().map(Vec::len).sum();
                format!(
                    "deny list from resources/seccomp/x86_64.json: {} filters, {instructions} BPF instructions",
                    programs.len()
                )
            }),
        Ok(actions) => Err(format!("the kernel lacks the errno action (has: {})", actions.trim())),
        Err(e) => Err(format!("seccomp filters unsupported: {e}")),
    };
    check("seccomp", result)
}

fn landlock() -> Check {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: with a NULL attribute, size 0 and the VERSION flag the call
    // only returns the ABI version; it reads and writes no memory.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    let result = if abi >= 6 {
        Ok(format!(
            "ABI {abi}: file system rules matching the mount layout, abstract socket and signal scoping"
        ))
    } else if abi >= 1 {
        Ok(format!(
            "ABI {abi}: file system rules (scoping needs ABI 6)"
        ))
    } else {
        Err(format!(
            "not available ({}); enable CONFIG_SECURITY_LANDLOCK and lsm=landlock",
            std::io::Error::last_os_error()
        ))
    };
    check("landlock", result)
}

fn cgroups() -> Check {
    let result = cgroup::detect()
        .map_err(|e| e.to_string())
        .and_then(|layout| {
            let name = cgroup::name_for("doctor", 0);
            let cg = cgroup::create(&name, &Limits::default())
                .map_err(|e| format!("{layout}: cannot create a job cgroup: {e}"))?;
            let paths = cg.paths();
            cg.remove().map_err(|e| e.to_string())?;
            let where_ = paths
                .first()
                .and_then(|p| p.parent())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            Ok(format!(
                "{layout}: memory (swap off), cpu quota, pids; job cgroups under {where_}"
            ))
        });
    check("cgroups", result)
}

/// What a job in the test sandbox reports about itself, one line each.
const SELF_REPORT: &str = r#"grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status
echo "core $(ulimit -Hc) nofile $(ulimit -Hn)"
if cat /proc/kallsyms >/dev/null 2>&1; then echo "kallsyms readable"; else echo "kallsyms masked"; fi
if touch /run/.doctor 2>/dev/null; then echo "run writable"; else echo "run denied"; fi
if [ -e /oldroot ]; then echo "oldroot present"; else echo "oldroot gone"; fi
"#;

/// Creates a sandbox with every layer, has the job inside report on its
/// own capabilities, no_new_privs, seccomp mode, rlimits, /proc masking,
/// Landlock and root, and checks each.
fn whole_sandbox() -> Vec<Check> {
    let started = Instant::now();
    let report = self_report();
    let took = started.elapsed().as_secs_f64() * 1000.0;
    let text = match report {
        Ok(text) => text,
        Err(e) => return vec![check("sandbox", Err(e))],
    };
    let has = |line: &str| {
        text.lines()
            .any(|l| l.split_whitespace().eq(line.split_whitespace()))
    };
    let verdict = |ok: bool, yes: &str| {
        if ok {
            Ok(yes.to_string())
        } else {
            Err(format!("not applied; the job reported:\n{text}"))
        }
    };
    vec![
        check(
            "pivot_root",
            verdict(has("oldroot gone"), "the job's root is its own; the host tree is detached"),
        ),
        check(
            "capabilities",
            verdict(
                has("CapEff: 0000000000000000") && has("CapBnd: 0000000000000000"),
                "effective, permitted, inheritable, bounding and ambient sets empty; SECBIT_NOROOT locked",
            ),
        ),
        check("no_new_privs", verdict(has("NoNewPrivs: 1"), "set for every process of the job")),
        check(
            "seccomp",
            verdict(has("Seccomp: 2"), "the job runs under the filter (mode 2)"),
        ),
        check(
            "landlock",
            verdict(has("run denied"), "a write to /run (a writable tmpfs outside the rules) was denied"),
        ),
        check(
            "rlimits",
            verdict(
                has(&format!("core 0 nofile {}", crate::rlimits::NOFILE)),
                "core 0, nofile, nproc, fsize = disk",
            ),
        ),
        check(
            "proc_masking",
            verdict(has("kallsyms masked"), "kcore, keys, kallsyms, kmsg, timer_list, ... masked; /proc/sys read-only"),
        ),
        check(
            "sandbox",
            Ok(format!(
                "a sandbox with every layer was built, ran its report and was torn down cleanly in {took:.1} ms"
            )),
        ),
    ]
}

fn self_report() -> Result<String, String> {
    let config = SandboxConfig {
        hostname: "airlock-doctor".into(),
        source: std::path::PathBuf::from("/usr/share"),
        workdir: "/workspace".into(),
        workspace_size: 1 << 20,
        tmp_size: 1 << 20,
        layers: Layers::default(),
        egress: false,
        cgroup: None,
        secrets: Vec::new(),
    };
    let mut sandbox = Sandbox::create(&config).map_err(|e| e.to_string())?;
    let command = CommandSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), SELF_REPORT.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/".into(),
    };
    let mut out = Vec::new();
    let outcome = sandbox
        .run(
            &command,
            Instant::now() + Duration::from_secs(10),
            &mut |o| {
                if let Output::Data(d) = o {
                    out.extend_from_slice(d);
                }
            },
        )
        .map_err(|e| e.to_string())?;
    let report = sandbox.destroy().map_err(|e| e.to_string())?;
    if !report.is_clean() {
        return Err(format!("teardown left {report:?}"));
    }
    match outcome {
        CommandOutcome::Exited(0) => Ok(String::from_utf8_lossy(&out).into_owned()),
        other => Err(format!("the report script in a test sandbox: {other:?}")),
    }
}
