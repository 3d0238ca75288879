//! The escape battery: every attack runs for real inside a real sandbox, and
//! each must fail for the right reason (the exact errno or message).
//!
//! Then, for each hardening layer, the whole battery runs again with that
//! layer turned off, and at least one attack must now get through (or fail
//! differently): proof that the battery tests the layer, not luck.
//!
//! `harness = false`: the test binary doubles as the sandbox init.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use sandbox::{CommandOutcome, CommandSpec, Layers, Output, Sandbox, SandboxConfig};

/// One attack: a shell script run in the job, and the exact output that
/// shows it failed for the right reason.
struct Attack {
    name: &'static str,
    script: &'static str,
    expect: Expect,
}

enum Expect {
    /// The output, trimmed, equals this.
    Exactly(&'static str),
    /// `fd_exhaustion`: EMFILE at or below the nofile limit.
    EmfileWithin(u64),
}

/// `p NAME` runs the C probe; `try CMD` prints "ok" or the last part of the
/// command's error message.
const PRELUDE: &str = r#"p() { /src/probe "$1"; }
try() { if out=$("$@" 2>&1); then echo ok; else printf '%s\n' "$out" | tail -n 1 | sed 's/.*: //'; fi; }
"#;

macro_rules! battery {
    ($($name:ident: $script:expr => $expect:expr;)*) => {
        const BATTERY: &[Attack] = &[$(Attack { name: stringify!($name), script: $script, expect: $expect }),*];
    };
}

use Expect::{EmfileWithin, Exactly};

battery! {
    // seccomp: each entry class of resources/seccomp/x86_64.json
    bpf_map_create: "p bpf" => Exactly("err EPERM");
    perf_event_open: "p perf_event_open" => Exactly("err EPERM");
    userfaultfd: "p userfaultfd" => Exactly("err EPERM");
    keyctl_session_keyring: "p keyctl" => Exactly("err EPERM");
    add_key: "p add_key" => Exactly("err EPERM");
    request_key: "p request_key" => Exactly("err EPERM");
    io_uring_setup: "p io_uring_setup" => Exactly("err EPERM");
    unshare_user_namespace: "p unshare_user" => Exactly("err EPERM");
    unshare_mount_namespace: "p unshare_mount" => Exactly("err EPERM");
    clone_new_user_namespace: "p clone_newuser" => Exactly("err EPERM");
    clone3_falls_back: "p clone3" => Exactly("err ENOSYS");
    setns: "p setns" => Exactly("err EPERM");
    mount_tmpfs: "p mount" => Exactly("err EPERM");
    mount_cgroup_release_agent: "p mount_cgroup" => Exactly("err EPERM");
    umount_masked_proc: "p umount" => Exactly("err EPERM");
    pivot_root: "p pivot_root" => Exactly("err EPERM");
    chroot: "p chroot" => Exactly("err EPERM");
    ptrace_attach: "p ptrace" => Exactly("err EPERM");
    process_vm_readv: "p process_vm_readv" => Exactly("err EPERM");
    pidfd_getfd: "p pidfd_getfd" => Exactly("err EPERM");
    kcmp: "p kcmp" => Exactly("err EPERM");
    open_by_handle_at: "p open_by_handle_at" => Exactly("err EPERM");
    name_to_handle_at: "p name_to_handle_at" => Exactly("err EPERM");
    kexec_load: "p kexec_load" => Exactly("err EPERM");
    init_module: "p init_module" => Exactly("err EPERM");
    finit_module: "p finit_module" => Exactly("err EPERM");
    swapon: "p swapon" => Exactly("err EPERM");
    reboot: "p reboot" => Exactly("err EPERM");
    syslog: "p syslog" => Exactly("err EPERM");
    personality_read_implies_exec: "p personality" => Exactly("err EPERM");
    fsopen: "p fsopen" => Exactly("err EPERM");
    open_tree_clone: "p open_tree" => Exactly("err EPERM");
    acct: "p acct" => Exactly("err EPERM");
    clock_settime: "p clock_settime" => Exactly("err EPERM");
    // capabilities
    capability_sets_empty: "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | awk '{print $2}' | sort -u" => Exactly("0000000000000000");
    no_new_privs: "grep '^NoNewPrivs' /proc/self/status | awk '{print $2}'" => Exactly("1");
    mknod_block_device: "p mknod" => Exactly("err EPERM");
    planted_setuid_binary_gains_nothing: "cp /usr/bin/grep /workspace/g && chmod 4755 /workspace/g && /workspace/g '^CapEff' /proc/self/status | awk '{print $2}'" => Exactly("0000000000000000");
    raw_packet_socket: "p raw_socket" => Exactly("err EPERM");
    sethostname: "p sethostname" => Exactly("err EPERM");
    // file system layout and Landlock
    write_src: "try touch /src/planted" => Exactly("Read-only file system");
    write_usr: "try touch /usr/bin/planted" => Exactly("Read-only file system");
    write_etc: "try touch /etc/planted" => Exactly("Read-only file system");
    write_root: "try mkdir /planted" => Exactly("Read-only file system");
    write_run_outside_landlock: "try touch /run/planted" => Exactly("Permission denied");
    usr_is_nosuid: "grep ' /usr ' /proc/self/mountinfo | grep -c nosuid" => Exactly("1");
    docker_socket_absent: "[ ! -e /run/docker.sock ] && [ ! -e /var/run/docker.sock ] && echo absent" => Exactly("absent");
    sys_and_cgroupfs_absent: "[ ! -e /sys/fs/cgroup ] && echo absent" => Exactly("absent");
    // processes
    host_processes_invisible: "n=$(ls /proc | grep -c '^[0-9]'); [ $n -le 6 ] && echo few || echo many $n" => Exactly("few");
    proc1_root_of_init: "try ls /proc/1/root/" => Exactly("Permission denied");
    proc1_mem_of_init: "p proc1_mem" => Exactly("err EACCES");
    proc1_environ_of_init: "p proc1_environ" => Exactly("err EACCES");
    proc_self_exe_overwrite: "p proc1_exe_write" => Exactly("err EACCES");
    init_ignores_kill: "kill -9 1; sleep 0.1; kill -0 1 && echo alive" => Exactly("alive");
    job_root_is_not_host_root: "awk '{ if ($2 == 0) print \"host root\"; else print \"not host root\" }' /proc/self/uid_map" => Exactly("not host root");
    no_supplementary_host_groups: "id -G" => Exactly("0");
    no_controlling_tty: "p tty" => Exactly("err ENXIO");
    // /proc masking, kernel logs and symbols
    proc_sys_core_pattern_read_only: "try sh -c 'echo \"|/tmp/x\" > /proc/sys/kernel/core_pattern'" => Exactly("Read-only file system");
    proc_keys_masked: "try cat /proc/keys" => Exactly("Permission denied");
    timer_list_masked: "try cat /proc/timer_list" => Exactly("Permission denied");
    kallsyms_masked: "try cat /proc/kallsyms" => Exactly("Permission denied");
    kmsg_masked: "try cat /proc/kmsg" => Exactly("Permission denied");
    dmesg_denied: "try dmesg" => Exactly("Operation not permitted");
    // network
    only_loopback: "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '" => Exactly("lo");
    cloud_metadata_unreachable: "p connect_metadata" => Exactly("err ENETUNREACH");
    ipv6_unreachable: "p connect_v6" => Exactly("err ENETUNREACH");
    // resources
    core_dumps_off: "ulimit -Hc" => Exactly("0");
    nofile_bounded: "ulimit -Hn" => Exactly("8192");
    fd_exhaustion: "p fd_exhaustion" => EmfileWithin(8192);
    workspace_disk_fill: "for i in $(seq 100); do dd if=/dev/zero of=/workspace/fill$i bs=1M count=1 2>&1 || break; done | grep -o 'No space left on device' | head -n 1" => Exactly("No space left on device");
    file_size_limited: "dd if=/dev/zero of=/tmp/big bs=1M count=100 2>&1 | grep -o 'File size limit exceeded' | head -n 1" => Exactly("File size limit exceeded");
}

fn main() {
    sandbox::run_if_init();
    let args = Arguments::from_args();
    let mut trials: Vec<Trial> = BATTERY
        .iter()
        .map(|a| Trial::test(a.name, move || attack_fails(a)))
        .collect();
    trials.push(Trial::test("battery_has_at_least_40_attacks", || {
        check(BATTERY.len() >= 40, format!("{} attacks", BATTERY.len()))
    }));
    trials.push(Trial::test(
        "concurrent_job_cannot_see_another_jobs_files_environment_or_identity",
        other_job_invisible,
    ));
    for (layer, _) in Layers::default().named() {
        trials.push(Trial::test(
            format!("absence_of_{layer}_is_caught"),
            move || absence_is_caught(layer),
        ));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(Ok(dir)) = SOURCE.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
    conclusion.exit();
}

/// The source tree every battery sandbox mounts at /src: the compiled probe,
/// in a per-process temporary directory that `main` removes at the end.
static SOURCE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The compiled probe's directory, built on first use.
fn source() -> Result<&'static Path, Failed> {
    let dir = SOURCE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("airlock-escape-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let probe_c = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/escape/probe.c");
        let out = std::process::Command::new("cc")
            .args(["-O1", "-Wall", "-o"])
            .arg(dir.join("probe"))
            .arg(&probe_c)
            .output()
            .map_err(|e| format!("cc: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cc failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(dir)
    });
    dir.as_deref().map_err(|e| Failed::from(e.as_str()))
}

fn sandbox(layers: Layers) -> Result<Sandbox, Failed> {
    let config = SandboxConfig {
        hostname: "airlock-escape".into(),
        source: source()?.to_path_buf(),
        workdir: "/workspace".into(),
        workspace_size: 64 << 20,
        tmp_size: 64 << 20,
        layers,
        egress: false,
        cgroup: None,
        secrets: Vec::new(),
    };
    Ok(Sandbox::create(&config)?)
}

fn run(sandbox: &mut Sandbox, script: &str) -> Result<String, Failed> {
    let command = CommandSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), format!("{PRELUDE}{script}")],
        env: vec![("PATH".into(), "/usr/bin:/bin:/usr/sbin:/sbin".into())],
        cwd: "/workspace".into(),
    };
    let mut out = Vec::new();
    let outcome = sandbox.run(
        &command,
        Instant::now() + Duration::from_secs(30),
        &mut |o| {
            if let Output::Data(d) = o {
                out.extend_from_slice(d);
            }
        },
    )?;
    if let CommandOutcome::TimedOut | CommandOutcome::SpawnFailed(_) = outcome {
        return Err(format!("attack script did not complete: {outcome:?}").into());
    }
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Whether `output` is the expected sign of a blocked attack.
fn blocked(attack: &Attack, output: &str) -> bool {
    match attack.expect {
        Exactly(want) => output == want,
        EmfileWithin(limit) => output
            .strip_prefix("EMFILE after ")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n <= limit),
    }
}

fn attack_fails(attack: &Attack) -> Result<(), Failed> {
    let mut sb = sandbox(Layers::default())?;
    let output = run(&mut sb, attack.script)?;
    let report = sb.destroy()?;
    check(report.is_clean(), format!("teardown left {report:?}"))?;
    match attack.expect {
        Exactly(want) => check(
            blocked(attack, &output),
            format!("{}: expected {want:?}, got {output:?}", attack.name),
        ),
        EmfileWithin(limit) => check(
            blocked(attack, &output),
            format!(
                "{}: expected EMFILE within {limit} fds, got {output:?}",
                attack.name
            ),
        ),
    }
}

/// With `layer` off, at least one attack of the battery must change outcome.
fn absence_is_caught(layer: &str) -> Result<(), Failed> {
    let mut layers = Layers::default();
    match layer {
        "seccomp" => layers.seccomp = false,
        "landlock" => layers.landlock = false,
        "capabilities" => layers.capabilities = false,
        "rlimits" => layers.rlimits = false,
        "proc_masking" => layers.proc_masking = false,
        other => return Err(format!("unknown layer {other}").into()),
    }
    let mut sb = sandbox(layers)?;
    let mut through = Vec::new();
    for attack in BATTERY {
        let output = run(&mut sb, attack.script)?;
        if !blocked(attack, &output) {
            through.push(format!("{} ({output})", attack.name));
        }
    }
    check(
        !through.is_empty(),
        format!("with {layer} off, every attack still failed the same way: the battery does not test {layer}"),
    )?;
    eprintln!("without {layer}: {}", through.join(", "));
    Ok(())
}

fn other_job_invisible() -> Result<(), Failed> {
    // Built in the scripts from two halves, so that no command line of job
    // B contains it whole.
    let (m1, m2) = ("airlock-other", "-job-7f3a9c");
    let marker = format!("{m1}{m2}");
    let mut a = sandbox(Layers::default())?;
    let mut b = sandbox(Layers::default())?;
    // Job A keeps a process with the marker in its environment and a file
    // with it in its workspace and /tmp.
    let planted = run(
        &mut a,
        &format!(
            "echo {marker} > /workspace/f; echo {marker} > /tmp/f; \
             env SECRET={marker} sleep 30 </dev/null >/dev/null 2>&1 & echo planted"
        ),
    )?;
    check(planted == "planted", planted)?;
    let search = format!(
        "{{ cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; \
               cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'; \
               find /workspace /tmp /run /dev/shm -type f -exec cat {{}} + 2>/dev/null; }} \
             | awk -v a={m1} -v b={m2} 'index($0, a b) {{ n++ }} END {{ print n + 0 }}'"
    );
    // The search works: job A finds its own marker...
    let own = run(&mut a, &search)?;
    check(
        own != "0",
        "the search does not find the marker even in job A",
    )?;
    // ...and job B finds nothing of it.
    let found = run(&mut b, &search)?;
    check(
        found == "0",
        format!("job B found job A's marker {found} time(s)"),
    )?;
    // Under a privileged runner each job has a host identity of its own.
    if running_as_root() {
        let uid = "awk '{print $2}' /proc/self/uid_map";
        let (ua, ub) = (run(&mut a, uid)?, run(&mut b, uid)?);
        check(ua != ub, format!("both jobs run as host uid {ua}"))?;
    }
    let a_report = a.destroy()?;
    let b_report = b.destroy()?;
    check(
        a_report.is_clean() && b_report.is_clean(),
        "teardown left processes",
    )
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

fn check(cond: bool, what: impl std::fmt::Display) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(what.to_string().into())
    }
}
