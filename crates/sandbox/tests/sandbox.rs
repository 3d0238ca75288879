//! Real sandboxes, created as the test runs (root or unprivileged user
//! namespaces required). `harness = false`: the test binary doubles as the
//! sandbox init, so `main` must call `sandbox::run_if_init` first.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{check, host_processes_with};
use libtest_mimic::{Arguments, Failed, Trial};
use sandbox::{CommandOutcome, CommandSpec, Output, Sandbox, SandboxConfig};

fn main() {
    sandbox::run_if_init();
    let args = Arguments::from_args();
    let tests = vec![
        Trial::test("runs_a_command_and_streams_its_output", runs_a_command),
        Trial::test("propagates_exit_codes_and_signals", exit_codes),
        Trial::test("steps_share_the_workspace", shared_workspace),
        Trial::test("source_usr_and_root_are_read_only", read_only_layout),
        Trial::test(
            "host_processes_and_interfaces_are_invisible",
            invisible_host,
        ),
        Trial::test("etc_is_generated_not_the_hosts", generated_etc),
        Trial::test("deadline_kills_the_whole_tree", deadline_kills_tree),
        Trial::test("daemonised_process_does_not_outlive_the_job", daemon_dies),
        Trial::test("missing_program_is_reported", missing_program),
        Trial::test("init_holds_none_of_the_runners_stdio", init_stdio),
        Trial::test("secrets_are_read_only_files_in_memory", secret_files),
        Trial::test("artifacts_copy_files_and_directories", artifacts_copy),
        Trial::test(
            "egress_sockets_are_served_from_the_jobs_namespace",
            egress_sockets,
        ),
        Trial::test(
            "attempts_to_bypass_the_proxy_are_seen_and_fail",
            network_attempts,
        ),
        Trial::test(
            "artifact_symlinks_cannot_reach_the_host",
            artifact_symlink_escape,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}

struct Job {
    sandbox: Sandbox,
    _source: tempfile::TempDir,
}

fn job() -> Result<Job, Failed> {
    job_with(Vec::new(), false)
}

/// A sandbox over a source holding `hello.txt`, with these secrets, and
/// with or without egress sockets.
fn job_with(secrets: Vec<sandbox::SecretFile>, egress: bool) -> Result<Job, Failed> {
    let source = tempfile::tempdir()?;
    std::fs::write(source.path().join("hello.txt"), "hi from src\n")?;
    let config = SandboxConfig {
        hostname: "airlock-test".into(),
        source: source.path().canonicalize()?,
        workdir: "/workspace".into(),
        workspace_size: 64 << 20,
        tmp_size: 64 << 20,
        layers: sandbox::Layers::default(),
        egress,
        cgroup: None,
        secrets,
    };
    check(
        !format!("{config:?}").contains("s3cr3t"),
        "a secret value shows in Debug output",
    )?;
    let sandbox = Sandbox::create(&config)?;
    Ok(Job {
        sandbox,
        _source: source,
    })
}

fn sh(script: &str) -> CommandSpec {
    CommandSpec {
        argv: vec!["/bin/sh".into(), "-e".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/workspace".into(),
    }
}

/// Runs `script` and returns (outcome, output).
fn run(job: &mut Job, script: &str, limit: Duration) -> Result<(CommandOutcome, String), Failed> {
    let mut out = Vec::new();
    let outcome = job
        .sandbox
        .run(&sh(script), Instant::now() + limit, &mut |o| {
            if let Output::Data(d) = o {
                out.extend_from_slice(d);
            }
        })?;
    Ok((outcome, String::from_utf8_lossy(&out).into_owned()))
}

const T: Duration = Duration::from_secs(20);

fn runs_a_command() -> Result<(), Failed> {
    let mut job = job()?;
    let (outcome, out) = run(&mut job, "echo hello; echo oops >&2; cat /src/hello.txt", T)?;
    check(outcome == CommandOutcome::Exited(0), format!("{outcome:?}"))?;
    check(
        out == "hello\noops\nhi from src\n",
        format!("output {out:?}"),
    )?;
    let report = job.sandbox.destroy()?;
    check(report.is_clean(), format!("{report:?}"))
}

fn exit_codes() -> Result<(), Failed> {
    let mut job = job()?;
    let (outcome, _) = run(&mut job, "exit 7", T)?;
    check(outcome == CommandOutcome::Exited(7), format!("{outcome:?}"))?;
    // -e: the first failing command ends the script.
    let (outcome, out) = run(&mut job, "false; echo not reached", T)?;
    check(outcome == CommandOutcome::Exited(1), format!("{outcome:?}"))?;
    check(out.is_empty(), format!("output {out:?}"))?;
    let (outcome, _) = run(&mut job, "kill -TERM $$", T)?;
    check(
        outcome == CommandOutcome::Signaled(15),
        format!("{outcome:?}"),
    )
}

fn shared_workspace() -> Result<(), Failed> {
    let mut job = job()?;
    run(&mut job, "echo kept > /workspace/state", T)?;
    let (outcome, out) = run(&mut job, "cat /workspace/state", T)?;
    check(outcome == CommandOutcome::Exited(0), format!("{outcome:?}"))?;
    check(out == "kept\n", format!("output {out:?}"))
}

fn read_only_layout() -> Result<(), Failed> {
    let mut job = job()?;
    for path in ["/src/new", "/usr/new", "/etc/new", "/new", "/bin/new"] {
        let (outcome, out) = run(&mut job, &format!("touch {path}"), T)?;
        check(
            outcome != CommandOutcome::Exited(0),
            format!("touch {path} succeeded"),
        )?;
        check(
            out.contains("Read-only file system"),
            format!("touch {path}: {out:?}"),
        )?;
    }
    let (outcome, out) = run(
        &mut job,
        "touch /workspace/a /tmp/b && id -u && hostname",
        T,
    )?;
    check(
        outcome == CommandOutcome::Exited(0),
        format!("{outcome:?} {out}"),
    )?;
    check(out == "0\nairlock-test\n", format!("output {out:?}"))?;
    let (_, mounts) = run(&mut job, "cat /proc/self/mounts", T)?;
    for line in mounts.lines() {
        let opts = line.split(' ').nth(3).unwrap_or_default();
        let dev_node = line.split(' ').nth(1).is_some_and(|m| {
            [
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty",
            ]
            .contains(&m)
        });
        check(
            opts.contains("nosuid"),
            format!("mount without nosuid: {line}"),
        )?;
        check(
            dev_node || opts.contains("nodev") || line.starts_with("devpts"),
            format!("mount without nodev: {line}"),
        )?;
    }
    Ok(())
}

fn invisible_host() -> Result<(), Failed> {
    let mut job = job()?;
    let (_, out) = run(&mut job, "ls /proc | grep -c '^[0-9]'", T)?;
    let n: u32 = out.trim().parse()?;
    // init, sh, ls, grep.
    check(n <= 4, format!("{n} processes visible"))?;
    let (_, ifaces) = run(
        &mut job,
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
        T,
    )?;
    check(ifaces == "lo\n", format!("interfaces {ifaces:?}"))?;
    let (outcome, _) = run(&mut job, "test -e /oldroot || test -e /newroot", T)?;
    check(
        outcome == CommandOutcome::Exited(1),
        "the old root is reachable",
    )
}

fn generated_etc() -> Result<(), Failed> {
    let mut job = job()?;
    let (outcome, out) = run(&mut job, "ls /etc", T)?;
    check(outcome == CommandOutcome::Exited(0), format!("{outcome:?}"))?;
    check(!out.contains("shadow"), "host /etc/shadow visible")?;
    check(out.contains("passwd"), format!("no passwd in {out}"))?;
    let (outcome, out) = run(&mut job, "cc --version | head -1", T)?;
    check(
        outcome == CommandOutcome::Exited(0),
        format!("cc via alternatives: {out}"),
    )
}

fn deadline_kills_tree() -> Result<(), Failed> {
    let mut job = job()?;
    let marker = "876543.21";
    let start = Instant::now();
    let (outcome, _) = run(
        &mut job,
        &format!("sleep {marker} & (sleep {marker} &) ; sleep {marker}"),
        Duration::from_millis(500),
    )?;
    check(outcome == CommandOutcome::TimedOut, format!("{outcome:?}"))?;
    check(
        start.elapsed() < Duration::from_secs(10),
        "timeout was not enforced",
    )?;
    let report = job.sandbox.destroy()?;
    check(report.is_clean(), format!("{report:?}"))?;
    check(host_processes_with(marker).is_empty(), "a sleep survived")
}

fn daemon_dies() -> Result<(), Failed> {
    let mut job = job()?;
    let marker = "765432.1";
    let (outcome, _) = run(
        &mut job,
        &format!(
            "setsid sh -c 'sleep {marker}' </dev/null >/dev/null 2>&1 &
             until grep -qs {marker} /proc/[0-9]*/cmdline; do sleep 0.01; done"
        ),
        T,
    )?;
    check(outcome == CommandOutcome::Exited(0), format!("{outcome:?}"))?;
    // The daemon's cmdline can read empty for an instant while its shell
    // execs sleep: look again for a while before concluding.
    let seen = (0..250).any(|_| {
        let found = !host_processes_with(marker).is_empty();
        if !found {
            std::thread::sleep(Duration::from_millis(20));
        }
        found
    });
    check(seen, "daemon did not start")?;
    let report = job.sandbox.destroy()?;
    check(report.is_clean(), format!("{report:?}"))?;
    check(
        host_processes_with(marker).is_empty(),
        "the daemon outlived its job",
    )
}

fn missing_program() -> Result<(), Failed> {
    let mut job = job()?;
    let spec = CommandSpec {
        argv: vec!["/no/such/program".into()],
        env: vec![],
        cwd: "/".into(),
    };
    let outcome = job.sandbox.run(&spec, Instant::now() + T, &mut |_| {})?;
    check(
        matches!(&outcome, CommandOutcome::SpawnFailed(e) if e.contains("/no/such/program")),
        format!("{outcome:?}"),
    )
}

fn secret_files() -> Result<(), Failed> {
    let mut job = job_with(
        vec![
            sandbox::SecretFile {
                name: "DEPLOY_TOKEN".into(),
                value: b"s3cr3t-deploy-value".to_vec().into(),
            },
            sandbox::SecretFile {
                name: "MULTI".into(),
                value: b"line one\nline two\n".to_vec().into(),
            },
        ],
        false,
    )?;
    let (outcome, out) = run(
        &mut job,
        "cat /run/secrets/DEPLOY_TOKEN; echo; cat /run/secrets/MULTI; \
         stat -c '%a %U' /run/secrets/DEPLOY_TOKEN; \
         grep ' /run/secrets ' /proc/self/mounts | cut -d' ' -f4 | tr ',' '\\n' | grep -E '^(ro|nosuid|nodev|noexec)$' | sort | tr '\\n' ' '; echo; \
         echo x > /run/secrets/DEPLOY_TOKEN 2>&1 || true",
        T,
    )?;
    check(
        outcome == CommandOutcome::Exited(0),
        format!("{outcome:?}: {out}"),
    )?;
    let want = "s3cr3t-deploy-value\nline one\nline two\n400 root\nnodev noexec nosuid ro \n";
    check(out.starts_with(want), format!("output {out:?}"))?;
    check(
        out.contains("Read-only file system") || out.contains("Permission denied"),
        format!("secret file writable: {out:?}"),
    )?;
    check(job.sandbox.destroy()?.is_clean(), "teardown")
}

fn init_stdio() -> Result<(), Failed> {
    let job = job()?;
    for fd in 0..3 {
        let link = std::fs::read_link(format!("/proc/{}/fd/{fd}", job.sandbox.pid()))?;
        check(
            link == Path::new("/dev/null"),
            format!("init fd {fd} is {link:?}"),
        )?;
    }
    Ok(())
}

/// A job that declared egress reaches the runner's sockets at 127.0.0.1:3128
/// and 127.0.0.1:53 of its own namespace, and cannot take those ports; the
/// host's loopback does not reach them; a job without egress has neither.
fn egress_sockets() -> Result<(), Failed> {
    use std::io::{Read, Write};
    let mut plain = job()?;
    check(
        plain.sandbox.take_egress().is_none(),
        "a job without egress got egress sockets",
    )?;
    let (_, resolv) = run(&mut plain, "cat /etc/resolv.conf", T)?;
    check(
        !resolv.contains("nameserver"),
        format!("resolv.conf {resolv:?}"),
    )?;
    plain.sandbox.destroy()?;

    let mut job = job_with(Vec::new(), true)?;
    let sockets = job.sandbox.take_egress().ok_or("no egress sockets")?;
    check(
        sockets.proxy.local_addr()? == sandbox::PROXY_ADDR.into(),
        format!("proxy at {:?}", sockets.proxy.local_addr()),
    )?;
    // The host's own 127.0.0.1:3128 is another namespace's: whatever
    // answers there (most likely nothing), it is not this listener.
    let _ = std::net::TcpStream::connect_timeout(
        &sandbox::PROXY_ADDR.into(),
        Duration::from_millis(200),
    );
    sockets.proxy.set_nonblocking(true)?;
    check(
        sockets.proxy.accept().is_err(),
        "the host's loopback reached the job's proxy listener",
    )?;
    sockets.proxy.set_nonblocking(false)?;
    let proxy = sockets.proxy.try_clone()?;
    let server = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut conn, _) = proxy.accept()?;
        let mut got = [0u8; 5];
        conn.read_exact(&mut got)?;
        conn.write_all(b"pong\n")?;
        Ok(got.to_vec())
    });
    let script = r#"cat /etc/resolv.conf
        exec 3<>/dev/tcp/127.0.0.1/3128; echo ping >&3; head -n1 <&3
        echo query > /dev/udp/127.0.0.1/53
        python3 -c 'import socket; socket.socket().bind(("127.0.0.1", 3128))' 2>&1 | tail -n1"#;
    let mut bash = sh(script);
    bash.argv = vec!["/bin/bash".into(), "-c".into(), script.into()];
    let mut out = Vec::new();
    let outcome = job.sandbox.run(&bash, Instant::now() + T, &mut |o| {
        if let Output::Data(d) = o {
            out.extend_from_slice(d);
        }
    })?;
    let out = String::from_utf8_lossy(&out);
    check(
        outcome == CommandOutcome::Exited(0),
        format!("{outcome:?}: {out}"),
    )?;
    check(
        out.contains("nameserver 127.0.0.1"),
        format!("output {out:?}"),
    )?;
    check(
        out.contains("pong"),
        format!("no answer from the proxy socket: {out:?}"),
    )?;
    check(
        out.contains("Address already in use"),
        format!("the job could bind the proxy's port: {out:?}"),
    )?;
    let got = server.join().map_err(|_| "server thread panicked")??;
    check(got == b"ping\n", format!("proxy got {got:?}"))?;
    sockets.dns.set_read_timeout(Some(T))?;
    let mut datagram = [0u8; 64];
    let (n, from) = sockets.dns.recv_from(&mut datagram)?;
    check(
        datagram.get(..n) == Some(&b"query\n"[..]) && from.ip().is_loopback(),
        format!("dns socket got {:?} from {from}", datagram.get(..n)),
    )?;
    check(job.sandbox.destroy()?.is_clean(), "teardown left something")
}

/// Every call that names a destination other than loopback is reported
/// (with the call and the address) and still fails in the kernel; loopback
/// and unix sockets are not reported.
fn network_attempts() -> Result<(), Failed> {
    let mut job = job()?;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = std::sync::Arc::clone(&seen);
    let watching = job.sandbox.on_network_attempt(Box::new(move |a| {
        if let Ok(mut seen) = into.lock() {
            seen.push(a);
        }
    }));
    check(watching, "no network watch with every layer on")?;
    let script = r#"python3 - <<'PY'
import errno, socket
def attempt(name, f):
    try:
        f()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
tcp = lambda: socket.create_connection(("198.51.100.7", 443), timeout=3)
tcp6 = lambda: socket.socket(socket.AF_INET6).connect(("2001:db8::7", 8443))
udp = lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("198.51.100.8", 53))
msg = lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendmsg([b"x"], [], 0, ("198.51.100.9", 123))
local = lambda: socket.create_connection(("127.0.0.1", 9), timeout=3)
unix = lambda: socket.socket(socket.AF_UNIX).connect("/tmp/nothing")
for name, f in [("tcp", tcp), ("tcp6", tcp6), ("udp", udp), ("msg", msg), ("local", local), ("unix", unix)]:
    attempt(name, f)
PY"#;
    let (outcome, out) = run(&mut job, script, T)?;
    check(
        outcome == CommandOutcome::Exited(0),
        format!("{outcome:?}: {out}"),
    )?;
    for line in [
        "tcp ENETUNREACH",
        "tcp6 ENETUNREACH",
        "udp ENETUNREACH",
        "msg ENETUNREACH",
        "local ECONNREFUSED",
        "unix ENOENT",
    ] {
        check(out.contains(line), format!("no {line:?} in {out:?}"))?;
    }
    let seen: Vec<(String, String)> = seen
        .lock()
        .map_err(|_| "poisoned")?
        .iter()
        .map(|a| (a.syscall.to_string(), a.addr.to_string()))
        .collect();
    let want: Vec<(String, String)> = [
        ("connect", "198.51.100.7:443"),
        ("connect", "[2001:db8::7]:8443"),
        ("sendto", "198.51.100.8:53"),
        ("sendmsg", "198.51.100.9:123"),
    ]
    .iter()
    .map(|(s, a)| ((*s).to_string(), (*a).to_string()))
    .collect();
    check(seen == want, format!("attempts seen: {seen:?}"))?;
    check(job.sandbox.destroy()?.is_clean(), "teardown left something")
}

fn artifacts_copy() -> Result<(), Failed> {
    let mut job = job()?;
    run(
        &mut job,
        "echo bin > out.bin; chmod 4755 out.bin; mkdir -p dir/sub; echo a > dir/a; echo b > dir/sub/b; ln -s /etc/passwd dir/link",
        T,
    )?;
    let dest = tempfile::tempdir()?;
    let report = sandbox::artifacts::copy_out(
        &job.sandbox.root(),
        "/workspace",
        &["out.bin".into(), "dir".into()],
        dest.path(),
    )?;
    check(report.files == 3, format!("{report:?}"))?;
    check(
        std::fs::read_to_string(dest.path().join("out.bin"))? == "bin\n",
        "out.bin",
    )?;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dest.path().join("out.bin"))?.permissions(),
    );
    check(
        mode & 0o7777 == 0o755,
        format!("mode {mode:o} (chmod 4755 in the job)"),
    )?;
    check(
        std::fs::read_to_string(dest.path().join("dir/sub/b"))? == "b\n",
        "dir/sub/b",
    )?;
    check(!dest.path().join("dir/link").exists(), "symlink copied")?;
    check(
        report.skipped == ["dir/link: symlink"],
        format!("{:?}", report.skipped),
    )
}

fn artifact_symlink_escape() -> Result<(), Failed> {
    // A host file the job must not be able to exfiltrate through artifacts.
    let host = tempfile::tempdir()?;
    let secret = host.path().join("host-secret");
    std::fs::write(&secret, "host secret")?;
    let mut job = job()?;
    let dir = host.path().display().to_string();
    run(
        &mut job,
        &format!("ln -s {} direct; ln -s {dir} viadir", secret.display()),
        T,
    )?;
    let dest = tempfile::tempdir()?;
    let direct = sandbox::artifacts::copy_out(
        &job.sandbox.root(),
        "/workspace",
        &["direct".into()],
        dest.path(),
    );
    check(
        matches!(
            direct,
            Err(sandbox::artifacts::ArtifactError::NotRegular(_))
        ),
        format!("direct symlink: {direct:?}"),
    )?;
    // The intermediate link resolves inside the job's root, where that host
    // directory does not exist.
    let via = sandbox::artifacts::copy_out(
        &job.sandbox.root(),
        "/workspace",
        &["viadir/host-secret".into()],
        dest.path(),
    );
    check(
        matches!(via, Err(sandbox::artifacts::ArtifactError::Missing(_))),
        format!("link through a directory: {via:?}"),
    )?;
    check(
        !contains_bytes(dest.path(), b"host secret"),
        "host secret copied out",
    )
}

fn contains_bytes(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let p = e.path();
            if p.is_dir() {
                contains_bytes(&p, needle)
            } else {
                std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            }
        })
}
