//! Watching real sandboxes from outside: exec events (connector and
//! polling), cgroup samples, containment. Root is needed for the connector
//! and cgroups. `harness = false`: the test binary doubles as the sandbox
//! init, so `main` must call `sandbox::run_if_init` first.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

mod common;

use common::{check, host_processes_with};
use libtest_mimic::{Arguments, Failed, Trial};
use sandbox::cgroup::Limits;
use sandbox::{
    CgroupSpec, CommandOutcome, CommandSpec, ExecEvent, ExecSource, Output, Sandbox, SandboxConfig,
    SandboxError, INIT_ARGV0,
};

fn main() {
    sandbox::run_if_init();
    let args = Arguments::from_args();
    let mut tests = Vec::new();
    // Perf events by the job's cgroup, perf events inherited from the
    // init (a job without a cgroup), the connector.
    for (source, cgroup, name) in [
        (ExecSource::Perf, true, "perf_cgroup"),
        (ExecSource::Perf, false, "perf_inherited"),
        (ExecSource::Connector, false, "connector"),
    ] {
        tests.extend([
            Trial::test(
                format!("{name}_execs_are_reported_with_argv_parent_and_job_pids"),
                move || in_time(source, || execs_reported(source, cgroup)),
            ),
            Trial::test(format!("{name}_exec_paths_are_the_jobs_view"), move || {
                in_time(source, || exec_paths_job_view(source, cgroup))
            }),
            Trial::test(
                format!("{name}_host_processes_are_not_reported"),
                move || host_not_reported(source, cgroup),
            ),
            Trial::test(
                format!("{name}_short_lived_burst_is_reported_whole"),
                move || in_time(source, || burst_reported(source, cgroup)),
            ),
        ]);
    }
    for (cgroup, name) in [(true, "perf_cgroup"), (false, "perf_inherited")] {
        tests.push(Trial::test(
            format!("{name}_sees_argv_as_executed_not_as_rewritten"),
            // The kernel's copy of the new stack lacks the arguments for
            // a few execs in a hundred, at random (an untouched page, see
            // perfwatch.rs; this perl, 2 in 30 beside two CPU hogs); then
            // they are read from /proc, rewritten, and recorded as such. A
            // watch that reads /proc always fails every try.
            move || tries(4, || argv_rewritten(cgroup)),
        ));
    }
    tests.extend([
        Trial::test("the_default_source_for_root_is_perf", default_source),
        Trial::test("connector_overflow_is_counted_and_caught_up", overflow),
        Trial::test("polling_reports_a_long_lived_process", polling_reports),
        Trial::test(
            "exec_watch_ends_when_the_sandbox_is_destroyed",
            watch_ends_on_destroy,
        ),
        Trial::test("samples_show_usage_and_cpu_grows", samples),
        Trial::test("contain_records_the_tree_and_kills_it", contain_with_cgroup),
        Trial::test(
            "contain_without_a_cgroup_kills_the_namespace",
            contain_without_cgroup,
        ),
        Trial::test("contain_and_destroy_may_race", contain_destroy_race),
    ]);
    libtest_mimic::run(&args, tests).exit();
}

/// Runs a test of what a watch reads, again if the connector was the
/// source and it failed. The connector's watch reads each process from
/// `/proc` after the kernel reports it, so on a loaded machine (the suite
/// on two cores) it can wake after a short process is gone; that is its
/// documented limit, not a fault. It must read in time in one of three
/// tries. Perf events' records come from the kernel, and get one try.
fn in_time(source: ExecSource, test: impl Fn() -> Result<(), Failed>) -> Result<(), Failed> {
    tries(
        if source == ExecSource::Connector {
            3
        } else {
            1
        },
        test,
    )
}

/// Passes if `test` passes in one of `n` tries; fails with every try's
/// failure.
fn tries(n: usize, test: impl Fn() -> Result<(), Failed>) -> Result<(), Failed> {
    let mut failed = Vec::new();
    for _ in 0..n {
        match test() {
            Ok(()) => {
                if !failed.is_empty() {
                    eprintln!("passed after {} failed tries: {failed:?}", failed.len());
                }
                return Ok(());
            }
            Err(e) => failed.push(e.message().unwrap_or_default().to_string()),
        }
    }
    Err(failed.join("\n---- next try ----\n").into())
}

struct Job {
    sandbox: Sandbox,
    _source: tempfile::TempDir,
}

fn job(cgroup: bool) -> Result<Job, Failed> {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
    let source = tempfile::tempdir()?;
    let config = SandboxConfig {
        hostname: "airlock-test".into(),
        source: source.path().canonicalize()?,
        workdir: "/workspace".into(),
        workspace_size: 64 << 20,
        tmp_size: 64 << 20,
        layers: sandbox::Layers::default(),
        egress: false,
        cgroup: cgroup.then(|| CgroupSpec {
            name: sandbox::cgroup::name_for(
                "monitor-test",
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ),
            limits: Limits {
                memory: Some(256 << 20),
                cpus: None,
                pids: Some(256),
            },
        }),
        secrets: Vec::new(),
    };
    Ok(Job {
        sandbox: Sandbox::create(&config)?,
        _source: source,
    })
}

fn argv(args: &[&str]) -> CommandSpec {
    CommandSpec {
        argv: args.iter().map(|a| (*a).to_string()).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/workspace".into(),
    }
}

fn run(sandbox: &mut Sandbox, command: &CommandSpec) -> Result<(CommandOutcome, String), Failed> {
    let mut out = Vec::new();
    let outcome = sandbox.run(command, Instant::now() + T, &mut |o| {
        if let Output::Data(d) = o {
            out.extend_from_slice(d);
        }
    })?;
    Ok((outcome, String::from_utf8_lossy(&out).into_owned()))
}

const T: Duration = Duration::from_secs(20);

/// A watch from `source` whose events go to a channel.
fn watch(sandbox: &Sandbox, source: ExecSource) -> Result<Receiver<ExecEvent>, Failed> {
    let (tx, rx) = mpsc::channel();
    sandbox.watch_execs_from(
        source,
        Box::new(move |batch| {
            for e in batch {
                let _ = tx.send(e);
            }
        }),
    )?;
    Ok(rx)
}

/// The attack: a program overwrites its arguments as soon as it runs
/// (perl's `$0 = ...`, what a miner does to pass for something else), so
/// anything that reads `/proc/PID/cmdline` afterwards sees the cover. The
/// perf source reads the arguments from the kernel's copy of the new
/// program's stack at the exec itself, before the program runs.
fn argv_rewritten(cgroup: bool) -> Result<(), Failed> {
    if !std::path::Path::new("/usr/bin/perl").exists() {
        return Err("this test needs /usr/bin/perl (Debian: perl-base)".into());
    }
    let mut job = job(cgroup)?;
    let rx = watch(&job.sandbox, ExecSource::Perf)?;
    // The job checks for itself that the cover is in place: its own
    // /proc shows the rewritten arguments while perl still runs.
    let script = "perl -e '$0 = \"innocent\"; sleep 3' airlock-hidden-argument & \
                  sleep 1; tr '\\0' ' ' < /proc/$!/cmdline; echo; wait";
    let (outcome, out) = run(&mut job.sandbox, &argv(&["/bin/sh", "-c", script]))?;
    check(
        outcome == CommandOutcome::Exited(0) && out == "innocent \n",
        format!("the job should see only the cover in /proc: {outcome:?} {out:?}"),
    )?;
    let events = collect(&rx, Duration::from_secs(5), |got| {
        got.iter().any(|e| e.path.ends_with("perl"))
    });
    let perl = events
        .iter()
        .find(|e| e.path.ends_with("perl"))
        .ok_or_else(|| format!("no exec of perl:{}", show(&events)))?;
    let real = args_of(perl).last().map(String::as_str) == Some("airlock-hidden-argument")
        && args_of(perl).first().map(String::as_str) == Some("perl");
    // The record never claims the cover was read at the exec...
    check(
        real || !perl.argv_at_exec,
        format!(
            "the cover is recorded as read at the exec:{}",
            show(&events)
        ),
    )?;
    // ...and this time it had the real arguments, from the exec.
    check(
        real && perl.argv_at_exec,
        format!(
            "perl's exec should carry its real arguments, read at the exec:{}",
            show(&events)
        ),
    )
}

/// A root runner on this host watches with perf events.
fn default_source() -> Result<(), Failed> {
    let job = job(false)?;
    let got = job.sandbox.watch_execs(Box::new(|_| {}))?;
    check(
        got == ExecSource::Perf,
        format!("the runner is root, yet the watch uses {got:?}"),
    )?;
    check(job.sandbox.destroy()?.is_clean(), "teardown")
}

/// Events until `done` says so (or `limit` passes).
fn collect(
    rx: &Receiver<ExecEvent>,
    limit: Duration,
    done: impl Fn(&[ExecEvent]) -> bool,
) -> Vec<ExecEvent> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) => got.push(e),
            Err(_) => break,
        }
    }
    got
}

fn args_of(e: &ExecEvent) -> Vec<String> {
    e.argv
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn show(events: &[ExecEvent]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "\n  pid {} host {} ppid {} uid {} {} {:?}{} parent {}",
                e.pid,
                e.host_pid,
                e.ppid,
                e.uid,
                e.path,
                args_of(e),
                if e.argv_at_exec { " (at exec)" } else { "" },
                e.parent
            )
        })
        .collect()
}

/// Whether `e` is an exec of `true`: its path; its command name when it
/// exited before its executable could be read; `?` when it was reaped too.
fn is_true(e: &ExecEvent) -> bool {
    ["/bin/true", "/usr/bin/true", "true", "?"].contains(&e.path.as_str())
}

/// Every exec of the job, with its argv, its pid and parent's pid in the
/// job's namespace, its uid inside the job, and its parent's executable;
/// and nothing else.
///
/// `true` lives for a few hundred microseconds: when the watch wakes too
/// late (a descheduled vCPU), its executable and argv are gone, and the
/// event carries its command name. Each must still be reported, with its
/// parent; whatever argv was read must be right, and most are read.
///
/// Perf events record every exec in the job itself: there, every path
/// must be read.
fn execs_reported(source: ExecSource, cgroup: bool) -> Result<(), Failed> {
    let mut job = job(cgroup)?;
    let rx = watch(&job.sandbox, source)?;
    let script = "for i in 1 2 3; do /bin/true; done; /bin/echo hi";
    let (outcome, out) = run(&mut job.sandbox, &argv(&["/bin/sh", "-c", script]))?;
    check(
        outcome == CommandOutcome::Exited(0) && out == "hi\n",
        format!("{outcome:?} {out:?}"),
    )?;
    let events = collect(&rx, Duration::from_secs(5), |got| got.len() >= 5);
    // Nothing more is coming (no host exec sneaks in meanwhile).
    let late = collect(&rx, Duration::from_millis(300), |_| false);
    let all: Vec<ExecEvent> = events.iter().chain(late.iter()).cloned().collect();
    check(all.len() == 5, format!("want 5 execs, got:{}", show(&all)))?;
    // Perf events: the argv, if not in the kernel's copy of the new
    // stack (rarely: an untouched page, see perfwatch.rs), is read from
    // /proc, and is missing if the process is gone by then.
    let argv_ok = |e: &ExecEvent, want: &[&str]| {
        args_of(e) == want || (source == ExecSource::Perf && e.argv.is_empty())
    };
    let sh = &all[0];
    check(
        argv_ok(sh, &["/bin/sh", "-c", script])
            && sh.path.ends_with("sh")
            && sh.ppid == 1
            && sh.parent == INIT_ARGV0
            && sh.pid > 1
            && sh.pid < 100,
        format!("the shell's exec:{}", show(&all)),
    )?;
    for e in &all {
        check(
            e.host_pid != e.pid && e.host_pid > 0 && (e.pid > 1 || e.path == "?"),
            format!("ids of {e:?}"),
        )?;
        check(
            e.at <= std::time::SystemTime::now()
                && e.at > std::time::SystemTime::now() - Duration::from_secs(30),
            format!("time of {e:?}"),
        )?;
    }
    let trues: Vec<&ExecEvent> = all.iter().filter(|e| is_true(e)).collect();
    check(trues.len() == 3, format!("three /bin/true:{}", show(&all)))?;
    // Arguments read at the exec only come from perf events, and are
    // there for most; the connector reads every argv from /proc later.
    let at_exec = trues.iter().filter(|t| t.argv_at_exec).count();
    check(
        match source {
            ExecSource::Perf => at_exec >= 2,
            _ => at_exec == 0,
        },
        format!(
            "{at_exec} of 3 /bin/true argv read at the exec:{}",
            show(&all)
        ),
    )?;
    for e in all.iter().filter(|e| e.argv_at_exec) {
        check(
            !e.argv.is_empty(),
            format!("an empty argv read at the exec: {e:?}"),
        )?;
    }
    for t in &trues {
        check(
            t.ppid == sh.pid && t.parent == sh.path && t.pid != sh.pid,
            format!("a /bin/true exec:{}", show(&all)),
        )?;
        // Read in time: the path and argv the job used, uid 0 inside. (Perf
        // events have the path always; the argv nearly always, since the
        // kernel's copy of the new stack may stop at an untouched page, and
        // the uid when the process was still there to be read.)
        check(
            t.path == "true"
                || t.path == "?"
                || (args_of(t) == ["/bin/true"] && t.uid == 0)
                || (source == ExecSource::Perf
                    && t.path == "/bin/true"
                    && args_of(t).is_empty()
                    && (t.uid == 0 || t.uid == u32::MAX)),
            format!("a /bin/true exec:{}", show(&all)),
        )?;
    }
    let read = trues.iter().filter(|t| t.path.ends_with("/true")).count();
    // Perf events: the binary comes from the kernel's own record of the
    // exec, never too late.
    let want = if source == ExecSource::Perf { 3 } else { 2 };
    check(
        read >= want,
        format!("most execs were read too late:{}", show(&all)),
    )?;
    let mut hosts: Vec<i32> = trues.iter().map(|t| t.host_pid).collect();
    hosts.dedup();
    check(
        hosts.len() == 3,
        format!("distinct processes:{}", show(&all)),
    )?;
    let echo = all.last().ok_or("no echo")?;
    // dash may exec its last command in place: then the echo is the
    // shell's process, whose parent is the init.
    check(
        (echo.path.ends_with("/echo") && argv_ok(echo, &["/bin/echo", "hi"])
            || echo.path == "echo"
            || echo.path == "?")
            && ((echo.pid == sh.pid && echo.ppid == 1) || echo.ppid == sh.pid),
        format!("the echo exec:{}", show(&all)),
    )?;
    check(job.sandbox.execs_lost() == 0, "events were lost")?;
    check(job.sandbox.destroy()?.is_clean(), "teardown")
}

/// A program that exists only inside the job is reported under the path
/// the job ran it by, not a host path.
fn exec_paths_job_view(source: ExecSource, cgroup: bool) -> Result<(), Failed> {
    let mut job = job(cgroup)?;
    let rx = watch(&job.sandbox, source)?;
    let (outcome, out) = run(
        &mut job.sandbox,
        &argv(&[
            "/bin/sh",
            "-c",
            "cp /bin/sleep /tmp/job-only-sleep && /tmp/job-only-sleep 0.2",
        ]),
    )?;
    check(
        outcome == CommandOutcome::Exited(0),
        format!("{outcome:?} {out}"),
    )?;
    let events = collect(&rx, Duration::from_secs(5), |got| {
        got.iter().any(|e| {
            args_of(e)
                .first()
                .is_some_and(|a| a == "/tmp/job-only-sleep")
        })
    });
    let own = events
        .iter()
        .find(|e| args_of(e) == ["/tmp/job-only-sleep", "0.2"])
        .ok_or_else(|| format!("no exec of the job's copy:{}", show(&events)))?;
    check(
        own.path == "/tmp/job-only-sleep",
        format!("path {:?}", own.path),
    )?;
    // cp lives about a millisecond: the connector's watch may read it too
    // late under load (then its command name, or nothing, is left), and
    // perf events may lack its argv (see execs_reported). Perf events
    // always have its path; the connector's are found by whatever is left,
    // at the least as an unread exec by the shell that ran the job's copy.
    let late = source == ExecSource::Connector;
    let cp = events
        .iter()
        .find(|e| {
            args_of(e).first().is_some_and(|a| a == "cp")
                || e.path.ends_with("/cp")
                || (late && e.path == "cp")
        })
        .or_else(|| {
            events
                .iter()
                .find(|e| late && e.path == "?" && e.ppid == own.ppid)
        })
        .ok_or_else(|| format!("no cp:{}", show(&events)))?;
    check(
        cp.path == "/usr/bin/cp"
            || cp.path == "/bin/cp"
            || (late && (cp.path == "cp" || cp.path == "?")),
        format!("cp's path {:?}", cp.path),
    )
}

/// Execs on the host, during a watch, are not the job's.
fn host_not_reported(source: ExecSource, cgroup: bool) -> Result<(), Failed> {
    let mut job = job(cgroup)?;
    let rx = watch(&job.sandbox, source)?;
    let marker = "host-marker-4711";
    let mut host = std::process::Command::new("/bin/sh")
        .args(["-c", "/bin/true; exec /bin/sleep 0.2", marker])
        .spawn()?;
    let host_pid = i32::try_from(host.id())?;
    // A job exec after it, so the watch has looked at the host's by then.
    let (outcome, _) = run(&mut job.sandbox, &argv(&["/bin/sleep", "0.211"]))?;
    check(outcome == CommandOutcome::Exited(0), format!("{outcome:?}"))?;
    host.wait()?;
    let events = collect(&rx, Duration::from_secs(5), |got| {
        got.iter().any(|e| args_of(e) == ["/bin/sleep", "0.211"])
    });
    check(
        events.iter().any(|e| args_of(e) == ["/bin/sleep", "0.211"]),
        format!("the job's exec is missing:{}", show(&events)),
    )?;
    check(
        !events
            .iter()
            .any(|e| e.host_pid == host_pid || args_of(e).iter().any(|a| a.contains(marker))),
        format!("a host exec was reported:{}", show(&events)),
    )
}

/// Programs that end within microseconds, in a burst, are all reported,
/// each with its argv (or, gone before it was read, at least as an exec).
fn burst_reported(source: ExecSource, cgroup: bool) -> Result<(), Failed> {
    let mut job = job(cgroup)?;
    let rx = watch(&job.sandbox, source)?;
    let n = 300;
    let script = format!("i=0; while [ $i -lt {n} ]; do /bin/true $i; i=$((i+1)); done");
    let started = Instant::now();
    let (outcome, _) = run(&mut job.sandbox, &argv(&["/bin/sh", "-c", &script]))?;
    let took = started.elapsed();
    check(outcome == CommandOutcome::Exited(0), format!("{outcome:?}"))?;
    let events = collect(&rx, Duration::from_secs(10), |got| got.len() > n);
    let trues = events
        .iter()
        .filter(|e| is_true(e) || e.path == "?")
        .count();
    let with_argv = events
        .iter()
        .filter(|e| args_of(e).first().is_some_and(|a| a == "/bin/true"))
        .count();
    eprintln!(
        "burst: {n} execs in {took:?}, {trues} reported, {with_argv} with argv, lost {}",
        job.sandbox.execs_lost()
    );
    check(
        trues == n || job.sandbox.execs_lost() > 0,
        format!("{trues} of {n} execs reported, none lost"),
    )?;
    // Usually all or nearly: the connector's watch may wake too late (a
    // loaded VM), and perf events' copy of the new stack may stop short
    // of the arguments (an untouched page, see perfwatch.rs).
    let want = n * 2 / 3;
    if source == ExecSource::Perf {
        let paths = events.iter().filter(|e| e.path == "/bin/true").count();
        check(paths == n, format!("{paths} of {n} binaries read"))?;
    }
    check(
        with_argv >= want,
        format!("only {with_argv} of {n} execs were read in time"),
    )
}

/// A watch that falls behind (its sink blocked) while the job execs
/// thousands of times: the socket overflows, the loss is counted, the
/// watch re-reads the job's processes and reports the one it missed, and
/// it goes on working.
fn overflow() -> Result<(), Failed> {
    let mut job = job(false)?;
    let (release, released) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    let mut first = true;
    job.sandbox.watch_execs_from(
        ExecSource::Connector,
        Box::new(move |batch| {
            if first {
                first = false;
                let _ = released.recv_timeout(Duration::from_secs(60));
            }
            for e in batch {
                let _ = tx.send(e);
            }
        }),
    )?;
    // 6,000 execs are 18,000 events: more than the socket holds.
    let marker = "30.777777";
    let script = format!(
        "i=0; while [ $i -lt 6000 ]; do /bin/true; i=$((i+1)); done; \
         /bin/sleep {marker} >/dev/null 2>&1 &"
    );
    let (outcome, _) = run(&mut job.sandbox, &argv(&["/bin/sh", "-c", &script]))?;
    check(outcome == CommandOutcome::Exited(0), format!("{outcome:?}"))?;
    release.send(())?;
    let events = collect(&rx, Duration::from_secs(20), |got| {
        got.iter().any(|e| args_of(e) == ["/bin/sleep", marker])
    });
    let lost = job.sandbox.execs_lost();
    check(
        lost > 100,
        format!("{lost} events counted lost after {} events", events.len()),
    )?;
    check(
        events.len() < 6000,
        format!("{} events: nothing was lost", events.len()),
    )?;
    let sleep = events
        .iter()
        .find(|e| args_of(e) == ["/bin/sleep", marker])
        .ok_or("the daemon started during the overflow was not reported")?;
    check(
        sleep.path == "/usr/bin/sleep" && sleep.pid > 1,
        format!("{sleep:?}"),
    )?;
    // Still watching.
    let (outcome, _) = run(&mut job.sandbox, &argv(&["/bin/sleep", "0.3"]))?;
    check(outcome == CommandOutcome::Exited(0), format!("{outcome:?}"))?;
    let after = collect(&rx, Duration::from_secs(5), |got| {
        got.iter().any(|e| args_of(e) == ["/bin/sleep", "0.3"])
    });
    check(
        after.iter().any(|e| args_of(e) == ["/bin/sleep", "0.3"]),
        "the watch stopped after the overflow",
    )?;
    check(job.sandbox.destroy()?.is_clean(), "teardown")
}

/// The polling source sees a process that lives long enough, with its
/// command line, and its parent.
fn polling_reports() -> Result<(), Failed> {
    let mut job = job(false)?;
    let rx = watch(&job.sandbox, ExecSource::Polling)?;
    let (outcome, _) = run(
        &mut job.sandbox,
        &argv(&["/bin/sh", "-c", "/bin/sleep 2; true"]),
    )?;
    check(outcome == CommandOutcome::Exited(0), format!("{outcome:?}"))?;
    let events = collect(&rx, Duration::from_secs(2), |got| {
        got.iter().any(|e| args_of(e) == ["/bin/sleep", "2"])
    });
    let sleep = events
        .iter()
        .find(|e| args_of(e) == ["/bin/sleep", "2"])
        .ok_or_else(|| format!("no sleep:{}", show(&events)))?;
    let sh = events
        .iter()
        .find(|e| args_of(e).first().is_some_and(|a| a == "/bin/sh"))
        .ok_or_else(|| format!("no shell:{}", show(&events)))?;
    check(
        sleep.path == "/usr/bin/sleep"
            && sleep.ppid == sh.pid
            && sleep.parent == sh.path
            && sh.ppid == 1
            && sleep.uid == 0,
        format!("events:{}", show(&events)),
    )?;
    check(job.sandbox.destroy()?.is_clean(), "teardown")
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .count()
}

/// Destroying the sandbox ends the watch's thread, which drops the sink:
/// a receiver sees the channel close. Replacing a watch ends the old one.
fn watch_ends_on_destroy() -> Result<(), Failed> {
    for source in [ExecSource::Perf, ExecSource::Connector, ExecSource::Polling] {
        let job = job(false)?;
        let name = format!("procwatch-{}", job.sandbox.pid());
        let name = name.get(..15).unwrap_or(&name).to_string();
        let first = watch(&job.sandbox, source)?;
        let rx = watch(&job.sandbox, source)?;
        check(
            first.recv_timeout(Duration::from_secs(2)) == Err(RecvTimeoutError::Disconnected),
            format!("{source:?}: the replaced watch's sink is still alive"),
        )?;
        // A thread names itself once it runs.
        let one = (0..100).any(|_| {
            let n = threads_named(&name);
            if n != 1 {
                std::thread::sleep(Duration::from_millis(10));
            }
            n == 1
        });
        check(
            one,
            format!("{source:?}: {} watch threads", threads_named(&name)),
        )?;
        let started = Instant::now();
        check(job.sandbox.destroy()?.is_clean(), "teardown")?;
        check(
            rx.recv_timeout(Duration::from_secs(2)) == Err(RecvTimeoutError::Disconnected),
            format!("{source:?}: the sink outlived the sandbox"),
        )?;
        check(
            started.elapsed() < Duration::from_secs(1),
            format!("{source:?}: destroy took {:?}", started.elapsed()),
        )?;
        let gone = (0..100).any(|_| {
            let n = threads_named(&name);
            if n > 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
            n == 0
        });
        check(
            gone,
            format!("{source:?}: the watch thread is still running"),
        )?;
    }
    Ok(())
}

/// Memory and pids show while the job runs; its cpu time grows with a
/// busy loop.
fn samples() -> Result<(), Failed> {
    let mut job = job(true)?;
    let before = job.sandbox.sample().ok_or("no sample with a cgroup")?;
    check(
        before.pids >= 1,
        format!("the init is not counted: {before:?}"),
    )?;
    let killer = job.sandbox.killer()?;
    let sampler = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        killer.sample()
    });
    // A second of shell arithmetic, then a wait so the sample above sees
    // both processes.
    let script = "end=$(($(date +%s%N) + 1000000000)); \
                  while [ $(date +%s%N) -lt $end ]; do :; done & \
                  wait";
    let (outcome, _) = run(&mut job.sandbox, &argv(&["/bin/sh", "-c", script]))?;
    check(outcome == CommandOutcome::Exited(0), format!("{outcome:?}"))?;
    let during = sampler
        .join()
        .map_err(|_| "sampler panicked")?
        .ok_or("no sample from the killer")?;
    let after = job.sandbox.sample().ok_or("no sample")?;
    check(
        during.pids >= 3 && during.memory_bytes > 0,
        format!("during the loop: {during:?}"),
    )?;
    check(
        after.cpu_usage_ns >= before.cpu_usage_ns + 300_000_000,
        format!("cpu did not grow by the loop: {before:?} -> {after:?}"),
    )?;
    check(after.memory_bytes > 0, format!("after: {after:?}"))?;
    check(job.sandbox.destroy()?.is_clean(), "teardown")
}

/// Runs `script` in `job` on another thread; returns when `marker`
/// processes are up, with the thread (which gives back the sandbox and
/// what `run` returned).
type Running = std::thread::JoinHandle<(Sandbox, Result<CommandOutcome, SandboxError>, Instant)>;

fn start(mut sandbox: Sandbox, script: &str, marker: &str, n: usize) -> Result<Running, Failed> {
    let command = argv(&["/bin/sh", "-c", script]);
    let runner = std::thread::spawn(move || {
        let outcome = sandbox.run(&command, Instant::now() + T, &mut |_| {});
        (sandbox, outcome, Instant::now())
    });
    let up = (0..500).any(|_| {
        let found = host_processes_with(marker).len() >= n;
        if !found {
            std::thread::sleep(Duration::from_millis(10));
        }
        found
    });
    check(up, format!("the job's {marker} processes did not start"))?;
    Ok(runner)
}

/// contain() freezes the job, records every process (the sleep with its
/// argv, parent links up to the init), kills all of them; `run` returns
/// at once; nothing is left in the cgroup; a second call finds nothing.
fn contain_with_cgroup() -> Result<(), Failed> {
    let job = job(true)?;
    let killer = job.sandbox.killer()?;
    let marker = "424242";
    let script = format!(
        "/bin/sleep 60.{marker} & (/bin/sleep 61.{marker} &); \
         /bin/sh -c '/bin/sleep 62.{marker}; true' & wait"
    );
    // Both shells and the three sleeps.
    let runner = start(job.sandbox, &script, marker, 5)?;
    let contained_at = Instant::now();
    let snapshot = killer.contain()?;
    let contained = contained_at.elapsed();
    let (sandbox, outcome, returned) = runner.join().map_err(|_| "run panicked")?;
    let listing: String = snapshot
        .iter()
        .map(|p| {
            let args: Vec<String> = p
                .argv
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            format!(
                "\n  {} (host {}) ppid {} uid {} {} {} rss {} {:?} {:?}",
                p.pid, p.host_pid, p.ppid, p.uid, p.state, p.path, p.rss_bytes, args, p.started
            )
        })
        .collect();
    check(
        matches!(outcome, Err(SandboxError::InitDied(_))),
        format!("run returned {outcome:?}"),
    )?;
    check(
        returned.duration_since(contained_at) < Duration::from_secs(3),
        format!("run returned {:?} after contain", returned - contained_at),
    )?;
    let by_args = |want: &[&str]| {
        snapshot.iter().find(|p| {
            p.argv.len() == want.len() && p.argv.iter().zip(want).all(|(a, w)| a == w.as_bytes())
        })
    };
    let init = snapshot
        .iter()
        .find(|p| p.pid == 1)
        .ok_or(format!("no init:{listing}"))?;
    let sh = by_args(&["/bin/sh", "-c", &script]).ok_or(format!("no shell:{listing}"))?;
    let sleep =
        by_args(&["/bin/sleep", &format!("60.{marker}")]).ok_or(format!("no sleep:{listing}"))?;
    let orphan = by_args(&["/bin/sleep", &format!("61.{marker}")])
        .ok_or(format!("no orphaned sleep:{listing}"))?;
    let inner = by_args(&["/bin/sh", "-c", &format!("/bin/sleep 62.{marker}; true")])
        .ok_or(format!("no inner shell:{listing}"))?;
    let nested = by_args(&["/bin/sleep", &format!("62.{marker}")])
        .ok_or(format!("no nested sleep:{listing}"))?;
    check(
        init.path == INIT_ARGV0 && init.ppid == 0 && sh.ppid == 1,
        format!("init and shell:{listing}"),
    )?;
    check(
        sleep.path == "/usr/bin/sleep"
            && sleep.ppid == sh.pid
            && sleep.uid == 0
            && sleep.rss_bytes > 0
            && sleep.host_pid != sleep.pid,
        format!("sleep:{listing}"),
    )?;
    // Its subshell exited: the init adopted it.
    check(orphan.ppid == 1, format!("orphan:{listing}"))?;
    check(
        inner.ppid == sh.pid && nested.ppid == inner.pid,
        format!("nested:{listing}"),
    )?;
    // As they were before the freeze: sleeping, not `D` as frozen.
    check(
        snapshot
            .iter()
            .all(|p| p.state == 'S' && p.started <= std::time::SystemTime::now()),
        format!("states and start times:{listing}"),
    )?;
    check(
        sleep.started_after_boot >= init.started_after_boot,
        format!("start times:{listing}"),
    )?;
    check(
        host_processes_with(marker).is_empty(),
        format!("a job process survived containment (took {contained:?})"),
    )?;
    let after = sandbox.sample().ok_or("no sample after containment")?;
    check(
        after.pids == 0,
        format!("processes left in the cgroup: {after:?}"),
    )?;
    let again = killer.contain()?;
    check(
        again.is_empty(),
        format!("second containment found {again:?}"),
    )?;
    check(sandbox.destroy()?.is_clean(), "teardown")?;
    let gone = killer.contain()?;
    check(
        gone.is_empty(),
        format!("containment after destroy: {gone:?}"),
    )?;
    check(killer.sample().is_none(), "a sample after destroy")
}

/// Without a cgroup, contain() records the job's pid namespace and kills
/// its init, which takes the rest with it.
fn contain_without_cgroup() -> Result<(), Failed> {
    let job = job(false)?;
    let killer = job.sandbox.killer()?;
    let marker = "71.818181";
    let runner = start(
        job.sandbox,
        &format!("/bin/sleep {marker} & wait"),
        marker,
        2,
    )?;
    let snapshot = killer.contain()?;
    let (sandbox, outcome, _) = runner.join().map_err(|_| "run panicked")?;
    check(
        matches!(outcome, Err(SandboxError::InitDied(_))),
        format!("run returned {outcome:?}"),
    )?;
    check(
        snapshot.iter().any(|p| {
            p.path == "/usr/bin/sleep" && p.argv.get(1).is_some_and(|a| a == marker.as_bytes())
        }),
        format!("no sleep in {snapshot:?}"),
    )?;
    check(
        snapshot.iter().any(|p| p.pid == 1 && p.path == INIT_ARGV0),
        format!("no init in {snapshot:?}"),
    )?;
    check(host_processes_with(marker).is_empty(), "the sleep survived")?;
    check(sandbox.destroy()?.is_clean(), "teardown")
}

/// Containments from two threads while a third destroys the sandbox:
/// none panics or hangs, each returns a record or an error, and nothing of
/// the job is left.
fn contain_destroy_race() -> Result<(), Failed> {
    for round in 0..3 {
        let mut job = job(true)?;
        let marker = format!("63.97979{round}");
        // A daemon that outlives its step: the sandbox is idle, not in run.
        let (outcome, _) = run(
            &mut job.sandbox,
            &argv(&[
                "/bin/sh",
                "-c",
                &format!("/bin/sleep {marker} >/dev/null 2>&1 &"),
            ]),
        )?;
        check(outcome == CommandOutcome::Exited(0), format!("{outcome:?}"))?;
        let killer = job.sandbox.killer()?;
        let containers: Vec<_> = (0..2)
            .map(|_| {
                let k = killer.clone();
                std::thread::spawn(move || k.contain())
            })
            .collect();
        let started = Instant::now();
        let report = job.sandbox.destroy()?;
        for c in containers {
            let got = c.join().map_err(|_| "contain panicked")?;
            if let Ok(record) = got {
                check(
                    record.iter().all(|p| p.host_pid > 0),
                    format!("record {record:?}"),
                )?;
            }
        }
        check(
            started.elapsed() < Duration::from_secs(10),
            format!("took {:?}", started.elapsed()),
        )?;
        check(report.is_clean(), format!("{report:?}"))?;
        check(
            host_processes_with(&marker).is_empty(),
            "the daemon survived",
        )?;
        check(killer.contain()?.is_empty(), "a record after destroy")?;
    }
    Ok(())
}
