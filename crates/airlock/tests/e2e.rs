//! End-to-end tests: the real `airlock` binary, real sandboxes, a fresh
//! state directory per test. Run as root or with unprivileged user
//! namespaces.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{assert_no_file_holds, job, ran, secrets_set, set_secret, Ran, World, BIN};

/// Host pids whose command line contains `marker`.
fn host_processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if u32::try_from(pid).ok() == Some(std::process::id()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(marker) {
                found.push(pid);
            }
        }
    }
    found
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Declares one end-to-end case.
macro_rules! e2e {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            let world = World::new();
            let f: fn(&World) = $body;
            f(&world);
        }
    };
}

e2e!(demo_succeeds_with_artifact_and_record, |w| {
    let demo = repo().join("examples/demo/airlock.yml");
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let r = w.airlock(&["run", demo.to_str().unwrap()]);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    // Every mount of a job lives and dies in its own mount namespace.
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        mounts_before
    );
    assert!(
        r.stdout.contains("build:2 │ hello, airlock"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("run 1: success"), "{}", r.stdout);
    let hello = w.home.path().join("runs/1/artifacts/build/hello");
    let out = Command::new(&hello).arg("e2e").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello, e2e\n");
    let show = w.show("1");
    assert_eq!(show["status"], "success");
    assert_eq!(show["exit_code"], 0);
    assert_eq!(job(&show, "build")["steps"].as_array().unwrap().len(), 2);
    let logs = w.airlock(&["logs", "1/build"]);
    assert!(logs.stdout.contains("hello, airlock"), "{}", logs.stdout);
    let list = w.airlock(&["runs", "list", "--json"]);
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["id"], 1);
});

e2e!(failing_step_exits_1_and_skips_dependants, |w| {
    let failing = repo().join("examples/failing/airlock.yml");
    let (r, doc) = w.run_json(&failing, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(doc["status"], "failed");
    let compile = job(&doc, "compile");
    assert_eq!(compile["status"], "failed");
    assert_eq!(compile["exit_code"], 1);
    assert!(compile["reason"]
        .as_str()
        .unwrap()
        .contains("exited with status 1"));
    assert_eq!(job(&doc, "test")["status"], "skipped");
    assert_eq!(job(&doc, "docs")["status"], "success");
    // The compiler's message reached the log, and no artifact was kept.
    let logs = w.airlock(&["logs", "1/compile"]);
    assert!(
        logs.stdout.contains("undeclared_variable"),
        "{}",
        logs.stdout
    );
    assert!(!w.home.path().join("runs/1/artifacts/compile").exists());
    assert_eq!(w.show("1")["jobs"][1]["status"], "skipped");
});

e2e!(invalid_pipeline_exits_2_with_position, |w| {
    let bad = w.pipeline("bad.yml", "version: 1\njobs:\n  build:\n    stpes: []\n");
    let r = w.airlock(&["run", bad.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    let want = format!("{}:4:5: unknown key \"stpes\"", bad.display());
    assert!(r.stderr.contains(&want), "{}", r.stderr);
    let v = w.airlock(&["validate", bad.to_str().unwrap()]);
    assert_eq!(v.code, 2);
    assert!(v.stderr.contains(&want), "{}", v.stderr);
    // Nothing was recorded for a pipeline that never started.
    let list = w.airlock(&["runs", "list", "--json"]);
    assert_eq!(list.stdout.trim(), "[]");
});

e2e!(bad_flags_and_unknown_jobs_exit_2, |w| {
    let ok = w.pipeline("ok.yml", "version: 1\njobs:\n  a:\n    steps: [\"true\"]\n");
    assert_eq!(w.airlock(&["run", "--no-such-flag"]).code, 2);
    assert_eq!(
        w.airlock(&["run", ok.to_str().unwrap(), "--parallel", "0"])
            .code,
        2
    );
    let r = w.airlock(&["run", ok.to_str().unwrap(), "--job", "nope"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("nope"), "{}", r.stderr);
    let missing = w.airlock(&["run", "/nonexistent/airlock.yml"]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
});

e2e!(unknown_secret_exits_2_before_anything_runs, |w| {
    let file = w.pipeline(
        "s.yml",
        "version: 1\njobs:\n  a:\n    secrets: [DEPLOY_TOKEN]\n    steps: [\"touch /tmp/ran\"]\n",
    );
    let r = w.airlock(&["run", file.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("s.yml:4:15"), "{}", r.stderr);
    assert!(r.stderr.contains("DEPLOY_TOKEN"), "{}", r.stderr);
    assert_eq!(w.airlock(&["runs", "list", "--json"]).stdout.trim(), "[]");
});

e2e!(unavailable_layers_exit_3, |w| {
    let image = w.pipeline(
        "image.yml",
        "version: 1\njobs:\n  a:\n    image: debian:12\n    steps: [\"true\"]\n",
    );
    let r = w.airlock(&["run", image.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("debian:12"), "{}", r.stderr);
});

e2e!(unusable_state_directory_exits_70, |w| {
    let ok = w.pipeline("ok.yml", "version: 1\njobs:\n  a:\n    steps: [\"true\"]\n");
    let file = w.files.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let out = Command::new(BIN)
        .arg("--home")
        .arg(file.join("home"))
        .args(["run", ok.to_str().unwrap()])
        .output()
        .unwrap();
    let r = ran(out);
    assert_eq!(r.code, 70, "{}", r.stderr);
    assert!(r.stderr.contains("internal error"), "{}", r.stderr);
});

e2e!(daemon_does_not_outlive_its_job, |w| {
    let marker = "654321.75";
    let file = w.pipeline(
        "daemon.yml",
        &format!(
            "version: 1\njobs:\n  a:\n    steps:\n      - run: |\n          setsid nohup sleep {marker} >/dev/null 2>&1 &\n          until grep -qs {marker} /proc/[0-9]*/cmdline; do sleep 0.01; done\n          echo daemon started\n"
        ),
    );
    let r = w.airlock(&["run", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("daemon started"));
    assert_eq!(host_processes_with(marker), Vec::<i32>::new());
});

e2e!(step_timeout_kills_the_tree, |w| {
    let marker = "543210.25";
    let file = w.pipeline(
        "timeout.yml",
        &format!(
            "version: 1\njobs:\n  slow:\n    steps:\n      - run: \"sleep {marker} & sleep {marker}\"\n        timeout: 1s\n      - run: echo never\n"
        ),
    );
    let started = Instant::now();
    let (r, doc) = w.run_json(&file, &[]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(r.code, 1, "{}", r.stderr);
    let slow = job(&doc, "slow");
    assert_eq!(slow["status"], "timeout");
    assert!(
        slow["reason"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{slow}"
    );
    assert_eq!(host_processes_with(marker), Vec::<i32>::new());
    let show = w.show("1");
    let steps = job(&show, "slow")["steps"].as_array().unwrap().clone();
    assert_eq!(steps[0]["status"], "timeout");
    assert_eq!(steps[1]["status"], "skipped");
});

e2e!(job_timeout_applies_across_steps, |w| {
    let file = w.pipeline(
        "jobtimeout.yml",
        "version: 1\njobs:\n  slow:\n    resources: { timeout: 1s }\n    steps: [\"sleep 0.3\", \"sleep 0.3\", \"sleep 30\"]\n",
    );
    let (r, doc) = w.run_json(&file, &[]);
    assert_eq!(r.code, 1);
    let slow = job(&doc, "slow");
    assert_eq!(slow["status"], "timeout");
    assert!(
        slow["reason"]
            .as_str()
            .unwrap()
            .contains("job timed out after 1s"),
        "{slow}"
    );
});

e2e!(independent_jobs_overlap_and_needs_wait, |w| {
    let file = w.pipeline(
        "parallel.yml",
        "version: 1\njobs:\n  a:\n    steps: [\"sleep 1\"]\n  b:\n    steps: [\"sleep 1\"]\n  c:\n    needs: [a, b]\n    steps: [\"true\"]\n",
    );
    let (r, _) = w.run_json(&file, &["--parallel", "2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let show = w.show("1");
    let at = |id: &str, key: &str| job(&show, id)[key].as_str().unwrap().to_string();
    // RFC 3339 UTC timestamps with milliseconds compare as strings.
    assert!(at("a", "started_at") < at("b", "finished_at"), "{show}");
    assert!(at("b", "started_at") < at("a", "finished_at"), "{show}");
    assert!(at("c", "started_at") >= at("a", "finished_at"), "{show}");
    assert!(at("c", "started_at") >= at("b", "finished_at"), "{show}");
});

e2e!(parallel_one_serialises, |w| {
    let file = w.pipeline(
        "serial.yml",
        "version: 1\njobs:\n  a:\n    steps: [\"sleep 0.3\"]\n  b:\n    steps: [\"sleep 0.3\"]\n",
    );
    let (r, _) = w.run_json(&file, &["--parallel", "1"]);
    assert_eq!(r.code, 0);
    let show = w.show("1");
    let at = |id: &str, key: &str| job(&show, id)[key].as_str().unwrap().to_string();
    let (a, b) = (("a", "started_at"), ("b", "started_at"));
    let first_end = if at(a.0, a.1) < at(b.0, b.1) {
        at("a", "finished_at")
    } else {
        at("b", "finished_at")
    };
    let second_start = at(a.0, a.1).max(at(b.0, b.1));
    assert!(second_start >= first_end, "{show}");
});

e2e!(job_selection_runs_needs_only, |w| {
    let demo = repo().join("examples/demo/airlock.yml");
    let (r, doc) = w.run_json(&demo, &["--job", "build"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ids: Vec<&str> = doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["lint", "build"]);
});

e2e!(environment_is_clean_and_layered, |w| {
    let file = w.pipeline(
        "env.yml",
        "version: 1\nname: envtest\nenv: { A: pipeline, B: pipeline }\njobs:\n  j:\n    env: { B: job }\n    steps: [\"env | sort\"]\n",
    );
    std::env::set_var("AIRLOCK_TEST_HOST_VAR", "leak");
    let r = w.airlock(&["run", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for want in [
        "A=pipeline",
        "B=job",
        "AIRLOCK_JOB=j",
        "AIRLOCK_PIPELINE=envtest",
        "AIRLOCK_RUN=1",
        "CI=true",
    ] {
        assert!(
            r.stdout.contains(&format!("│ {want}")),
            "{want} missing: {}",
            r.stdout
        );
    }
    assert!(
        !r.stdout.contains("AIRLOCK_TEST_HOST_VAR"),
        "host environment leaked"
    );
});

e2e!(terminal_escapes_from_jobs_are_neutralised, |w| {
    let file = w.pipeline(
        "esc.yml",
        "version: 1\njobs:\n  j:\n    steps: [\"printf 'a\\\\033]52;c;ZXZpbA==\\\\007b\\\\n'\"]\n",
    );
    let r = w.airlock(&["run", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !r.stdout.contains('\x1b'),
        "raw escape reached the terminal: {:?}",
        r.stdout
    );
    assert!(
        r.stdout.contains("a\\x1b]52;c;ZXZpbA==\\u{7}b"),
        "{:?}",
        r.stdout
    );
});

e2e!(killed_runner_leaves_nothing_and_run_is_lost, |w| {
    let marker = "432109.5";
    let file = w.pipeline(
        "crash.yml",
        &format!("version: 1\njobs:\n  a:\n    steps: [\"sleep {marker}\"]\n"),
    );
    let runner = kill_runner_mid_job(w, &file, marker);
    // The parent-death signal takes the sandbox down with its runner.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !host_processes_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the job outlived its runner");
        std::thread::sleep(Duration::from_millis(20));
    }
    let leftovers = || job_cgroups_of(runner);
    if running_as_root() {
        assert!(
            !leftovers().is_empty(),
            "expected the dead runner's cgroups to be there"
        );
    }
    let list = w.airlock(&["runs", "list", "--json"]);
    assert!(list.stderr.contains("marked lost"), "{}", list.stderr);
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["status"], "lost");
    assert_eq!(
        leftovers(),
        Vec::<PathBuf>::new(),
        "cgroups of the dead runner remain"
    );
});

/// Starts `airlock run FILE`, waits until its job runs (a process whose
/// command line holds `marker`), SIGKILLs the runner and returns its pid.
fn kill_runner_mid_job(w: &World, file: &Path, marker: &str) -> u32 {
    let mut child = w
        .command(&["run", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while host_processes_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let runner = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    runner
}

// The runner holds the secrets of the jobs it runs (and the key of the
// store) in memory: a crash must not write them into a core file. Its
// core file limit is 0, soft and hard, while a job runs.
e2e!(the_runner_allows_no_core_file, |w| {
    let marker = "510987.5";
    let file = w.pipeline(
        "core.yml",
        &format!("version: 1\nname: core\njobs:\n  hold:\n    steps: [\"sleep {marker}\"]\n"),
    );
    let mut child = w
        .command(&["run", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while host_processes_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(fields[4..6], ["0", "0"], "{core}");
});

/// Job cgroup directories (any v1 hierarchy or v2) made by runner `pid`.
fn job_cgroups_of(pid: u32) -> Vec<PathBuf> {
    let suffix = format!(".{pid}");
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if dir.file_name().is_some_and(|n| n == "airlock")
                && e.file_name().to_string_lossy().ends_with(&suffix)
            {
                found.push(p);
            } else if p.components().count() < 12 {
                stack.push(p);
            }
        }
    }
    found
}

e2e!(demo_runs_rootless_as_an_unprivileged_user, |w| {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !running_as_root() {
        // Already unprivileged: every other test here is the rootless test.
        return;
    }
    // Everything the unprivileged user touches must be theirs or readable.
    let open = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(w.files.path(), 0o755);
    let bin = w.files.path().join("airlock");
    std::fs::copy(BIN, &bin).unwrap();
    open(&bin, 0o755);
    let demo = w.files.path().join("demo");
    std::fs::create_dir(&demo).unwrap();
    for f in ["airlock.yml", "hello.c"] {
        std::fs::copy(repo().join("examples/demo").join(f), demo.join(f)).unwrap();
        open(&demo.join(f), 0o644);
    }
    open(&demo, 0o755);
    let home = w.files.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let as_nobody = |args: &[&str]| {
        let out = Command::new(&bin)
            .uid(NOBODY)
            .gid(NOBODY)
            .env("HOME", &home)
            .arg("--home")
            .arg(&home)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        ran(out)
    };
    let pipeline = demo.join("airlock.yml");
    let run = ["run", pipeline.to_str().unwrap(), "--json"];
    // Without cgroups (v1, or v2 without delegation) it refuses...
    let r = as_nobody(&run);
    assert_eq!(r.code, 3, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("--allow-degraded cgroups"),
        "{}",
        r.stderr
    );
    // ...unless the operator allows it, which the run records.
    let r = as_nobody(&[&run[..], &["--allow-degraded", "cgroups"]].concat());
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("warning: degraded: cgroups"),
        "{}",
        r.stderr
    );
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["status"], "success");
    assert!(home.join("runs/1/artifacts/build/hello").exists());
    let show: Value =
        serde_json::from_str(&as_nobody(&["runs", "show", "1", "--json"]).stdout).unwrap();
    assert!(
        show["degraded"][0]
            .as_str()
            .unwrap()
            .starts_with("cgroups:"),
        "{show}"
    );
    // The audit log records the degraded layer, and the sandboxes' layers
    // without a cgroup.
    let audit = as_nobody(&["audit", "show", "--json"]).stdout;
    let started = audit
        .lines()
        .find(|l| l.contains("\"run_started\"") && l.contains("\"run\":1"))
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(started.contains("\"degraded\":[\"cgroups:"), "{started}");
    let ready = audit
        .lines()
        .find(|l| l.contains("\"sandbox_ready\""))
        .unwrap();
    assert!(!ready.contains("\"cgroup\""), "{ready}");
    assert_eq!(as_nobody(&["audit", "verify"]).code, 0);
});

const NOBODY: u32 = 65534;

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

e2e!(memory_bomb_fails_with_memory_limit, |w| {
    let file = w.pipeline(
        "membomb.yml",
        "version: 1\njobs:\n  bomb:\n    resources: { memory: 64MiB, timeout: 60s }\n    steps:\n      - run: |\n          python3 -c '\n          a = []\n          while True: a.append(bytearray(1 << 20))\n          '\n",
    );
    let (r, doc) = w.run_json(&file, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let bomb = job(&doc, "bomb");
    assert_eq!(bomb["status"], "failed", "{bomb}");
    assert!(
        bomb["reason"]
            .as_str()
            .unwrap()
            .starts_with("memory limit (64 MiB) exceeded"),
        "{bomb}"
    );
});

e2e!(fork_bomb_is_bounded_by_pids_limit, |w| {
    let marker = "321098.5";
    let file = w.pipeline(
        "forkbomb.yml",
        &format!(
            "version: 1\njobs:\n  bomb:\n    resources: {{ pids: 64 }}\n    steps:\n      - run: |\n          bomb() {{ sleep {marker} & bomb | bomb & }}\n          bomb\n          wait\n        timeout: 3s\n"
        ),
    );
    let (r, doc) = w.run_json(&file, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let bomb = job(&doc, "bomb");
    assert_eq!(bomb["status"], "failed", "{bomb}");
    assert!(
        bomb["reason"]
            .as_str()
            .unwrap()
            .starts_with("pids limit (64) reached"),
        "{bomb}"
    );
    assert_eq!(host_processes_with(marker), Vec::<i32>::new());
});

e2e!(cpu_quota_is_enforced, |w| {
    // Busy for 3 s of wall time under a quota of half a core: the CPU time
    // used must be about 1.5 s (a functional check with a wide margin).
    let file = w.pipeline(
        "cpu.yml",
        "version: 1\njobs:\n  spin:\n    resources: { cpus: 0.5 }\n    steps:\n      - run: |\n          python3 -c '\n          import os, time\n          t = time.monotonic()\n          while time.monotonic() - t < 3: pass\n          c = os.times()\n          print(\"cpu\", c.user + c.system)\n          '\n",
    );
    let r = w.airlock(&["run", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let cpu: f64 = r
        .stdout
        .lines()
        .find_map(|l| l.split("│ cpu ").nth(1))
        .unwrap_or_else(|| panic!("no cpu line in {}", r.stdout))
        .trim()
        .parse()
        .unwrap();
    let share = cpu / 3.0;
    assert!(
        (0.35..=0.65).contains(&share),
        "used {share:.2} of a core under a 0.5 quota"
    );
});

e2e!(doctor_reports_every_layer, |w| {
    let r = w.airlock(&["doctor", "--json"]);
    let checks: Value = serde_json::from_str(&r.stdout).unwrap();
    let layers: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["layer"].as_str().unwrap())
        .collect();
    for want in [
        "mode",
        "namespaces",
        "seccomp",
        "landlock",
        "cgroups",
        "sandbox",
    ] {
        assert!(layers.contains(&want), "{want} missing from {layers:?}");
    }
    let all_ok = checks.as_array().unwrap().iter().all(|c| c["ok"] == true);
    // Exit 0 exactly when every layer is there (3 otherwise, e.g. rootless
    // cgroups on a v1 host).
    assert_eq!(r.code, if all_ok { 0 } else { 3 }, "{}", r.stdout);
    if running_as_root() {
        assert!(all_ok, "a root CI host supports every layer: {}", r.stdout);
    }
    let text = w.airlock(&["doctor"]);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("sandbox") && l.contains(" ok ")),
        "{}",
        text.stdout
    );
});

e2e!(doctor_warns_about_stale_secrets, |w| {
    let fresh = w.airlock(&["doctor", "--json"]);
    secrets_set(
        w,
        &["OLD_TOKEN", "--scope", "x/*", "--max-age", "1s"],
        "old-token-value",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let r = w.airlock(&["doctor", "--json"]);
    // A warning, not a missing layer: the exit code does not change.
    assert_eq!(r.code, fresh.code, "{}", r.stdout);
    let lines: Value = serde_json::from_str(&r.stdout).unwrap();
    let warnings: Vec<&Value> = lines
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["warning"] == true)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", r.stdout);
    assert_eq!(warnings[0]["layer"], "secrets");
    let detail = warnings[0]["detail"].as_str().unwrap();
    assert!(detail.contains("secret OLD_TOKEN (version 1)"), "{detail}");
    assert!(detail.contains("past its max age of 1s"), "{detail}");
    let text = w.airlock(&["doctor"]);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("secrets") && l.contains("WARNING") && l.contains("OLD_TOKEN")),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains("old-token-value"));
});

e2e!(every_malformed_pipeline_exits_2_with_its_position, |w| {
    // The exact line:col of each file is asserted by the spec crate's
    // table (crates/spec/tests/malformed.rs); here the binary must turn
    // every one of them into exit 2 and a `file:line:col:` message.
    let dir = repo().join("crates/spec/tests/malformed");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "only {} malformed files", files.len());
    for file in files {
        let r = w.airlock(&["validate", file.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{}: {}", file.display(), r.stderr);
        let rest = r
            .stderr
            .strip_prefix(&format!("airlock: {}:", file.display()))
            .unwrap_or_else(|| panic!("{}: {}", file.display(), r.stderr));
        let mut parts = rest.splitn(3, ':');
        let (line, col) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(
            line.parse::<u32>().is_ok_and(|l| l >= 1) && col.parse::<u32>().is_ok_and(|c| c >= 1),
            "{}: no line:col in {}",
            file.display(),
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
});

e2e!(source_under_a_private_root_directory_is_mounted, |w| {
    use std::os::unix::fs::PermissionsExt;
    // Like a checkout under /root (0700): the job's host identity cannot
    // walk this path, the runner can, and the job still sees its source.
    let private = w.files.path().join("private");
    let checkout = private.join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&checkout, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(checkout.join("hello.txt"), "from a private dir\n").unwrap();
    let file = checkout.join("airlock.yml");
    std::fs::write(
        &file,
        "version: 1\njobs:\n  a:\n    steps: [\"cat /src/hello.txt\"]\n",
    )
    .unwrap();
    let r = w.airlock(&["run", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("a:1 │ from a private dir"),
        "{}",
        r.stdout
    );
});

e2e!(secrets_reach_the_job_and_never_any_output, |w| {
    let secret = "Zq8-leak-battery-s3cret-Vx42";
    set_secret(w, "API_TOKEN", secret, "leaks/*");
    // The job prints the secret in every form the redactor knows, to stdout
    // and stderr, split across writes with pauses between them.
    let file = w.pipeline(
        "leaks.yml",
        r#"version: 1
name: leaks
jobs:
  print:
    secrets: [{ name: API_TOKEN, env: API_TOKEN }]
    steps:
      - run: |
          v=$(cat /run/secrets/API_TOKEN)
          test "$v" = "$API_TOKEN"
          echo "plain $v"; echo "stderr $v" >&2
          printf '%s' "$v" | base64; printf 'x%s' "$v" | base64; printf 'xy%s' "$v" | base64
          printf '%s' "$v" | base64 | tr '+/' '-_' | tr -d '='
          printf '%s' "$v" | xxd -p; printf '%s' "$v" | xxd -p | tr a-f A-F
          python3 -c 'import sys, urllib.parse, json; v = sys.argv[1]; print(urllib.parse.quote(v, safe="")); print(json.dumps({"t": v}))' "$v"
          i=1; while [ $i -le ${#v} ]; do printf '%s' "$(printf '%s' "$v" | cut -c$i)"; i=$((i+1)); sleep 0.01; done; echo
          printf '%s' "$v" | head -c 7; sleep 0.3; printf '%s\n' "$v" | tail -c +8
"#,
    );
    let (r, doc) = w.run_json(&file, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(job(&doc, "print")["status"], "success");
    let forms = [
        secret.to_string(),
        base64_of(secret.as_bytes()),
        hex_of(secret.as_bytes()),
    ];
    for form in &forms {
        assert!(!r.stdout.contains(form.as_str()), "{form} in --json output");
        assert!(
            !r.stderr.contains(form.as_str()),
            "{form} in the terminal output"
        );
    }
    assert!(r.stderr.contains("plain ***"), "{}", r.stderr);
    // No byte of it in any file of the state directory (logs, database,
    // run record, keys).
    let text = w.airlock(&["run", file.to_str().unwrap()]);
    assert!(!text.stdout.contains(secret), "{}", text.stdout);
    assert_no_file_holds(w.home.path(), &forms);
    let logs = w.airlock(&["logs", "1/print"]);
    assert!(logs.stdout.contains("plain ***"), "{}", logs.stdout);
    // Leases end with the job.
    let leases: Value =
        serde_json::from_str(&w.airlock(&["secrets", "leases", "--json"]).stdout).unwrap();
    assert!(
        leases
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["state"] == "revoked"),
        "{leases}"
    );
});

/// Needles and split count for the leak battery, computed on the host by
/// the battery script itself (`--plan`), for these secret values.
fn battery_plan(values: &[&str]) -> (Vec<Vec<u8>>, u64) {
    let script = repo().join("crates/airlock/tests/leaks/battery.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--plan")
        .args(values.iter().map(|v| hex_of(v.as_bytes())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let needles = plan["needles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let h = h.as_str().unwrap();
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect();
    (needles, plan["splits"].as_u64().unwrap())
}

fn assert_no_needle(what: &str, bytes: &[u8], needles: &[Vec<u8>]) {
    for n in needles {
        assert!(
            !bytes.windows(n.len()).any(|x| x == n.as_slice()),
            "{:?} found in {what}",
            String::from_utf8_lossy(n)
        );
    }
}

e2e!(leak_battery_every_form_split_at_every_offset, |w| {
    // Characters that URL-encoding, form encoding, JSON and base64 each
    // write differently; a multi-line secret; and (in the job) a value
    // registered at run time through the mask channel.
    let token = "Zq8/leak+battery \"s3cret\"&Vx42<>";
    let multi = "first-line-Kx81\nsecond-line-Pw27";
    set_secret(w, "TOKEN", token, "battery/*");
    set_secret(w, "MULTI", multi, "battery/*");
    std::fs::copy(
        repo().join("crates/airlock/tests/leaks/battery.py"),
        w.files.path().join("battery.py"),
    )
    .unwrap();
    let file = w.pipeline(
        "battery.yml",
        "version: 1\nname: battery\njobs:\n  leak:\n    secrets: [TOKEN, MULTI]\n    steps: [\"python3 /src/battery.py TOKEN MULTI\"]\n",
    );
    let (needles, splits) = battery_plan(&[token, multi]);
    assert!(needles.len() > 25, "{}", needles.len());
    let done = format!("battery done: {splits} splits");

    let (r, doc) = w.run_json(&file, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(job(&doc, "leak")["status"], "success");
    assert_no_needle("--json output", r.stdout.as_bytes(), &needles);
    assert_no_needle("--json stderr", r.stderr.as_bytes(), &needles);
    let text = w.airlock(&["run", file.to_str().unwrap()]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout.contains(&done),
        "the battery did not run to its end"
    );
    assert!(!text.stdout.contains("mask refused"), "{}", text.stdout);
    assert_no_needle("the terminal output", text.stdout.as_bytes(), &needles);
    assert_no_needle("the terminal stderr", text.stderr.as_bytes(), &needles);
    let logs = w.airlock(&["logs", "2/leak"]);
    assert!(logs.stdout.contains(&done), "{}", &logs.stdout[..200]);
    assert_no_file_holds(w.home.path(), &needles);
});

e2e!(jobs_register_values_to_mask_at_run_time, |w| {
    // A job without secrets registers a value it made in one step and
    // prints it in the next; registers one without a line break and prints
    // it at once; and registers a too-short value, which is refused with a
    // warning that does not repeat it.
    let file = w.pipeline(
        "mask.yml",
        r#"version: 1
name: mask
jobs:
  a:
    steps:
      - run: |
          v="minted-$(id -u)-token-$((6 * 7))"
          printf '%s\n' "$v" > /run/airlock/mask
          printf '%s' "$v" > /tmp/v
          printf 'abc\n' > /run/airlock/mask
      - run: |
          echo "value $(cat /tmp/v) end"
          echo "short abc end"
          w="unterminated-$((1 + 1))-value"
          printf '%s' "$w" > /run/airlock/mask
          echo "then $w end"
"#,
    );
    let r = w.airlock(&["run", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("a:2 │ value *** end"), "{}", r.stdout);
    assert!(r.stdout.contains("a:2 │ then *** end"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("warning: mask refused: value to mask is 3 bytes long"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("-token-42"), "{}", r.stdout);
    assert!(!r.stdout.contains("unterminated-2-value"), "{}", r.stdout);
    assert!(r.stdout.contains("short abc end"), "{}", r.stdout);
});

e2e!(
    unknown_and_out_of_scope_secrets_exit_2_before_anything_runs,
    |w| {
        set_secret(w, "DEPLOY_TOKEN", "deploy-token-value-1", "app/deploy");
        let file = w.pipeline(
        "scope.yml",
        "version: 1\nname: app\njobs:\n  build:\n    secrets: [DEPLOY_TOKEN]\n    steps: [\"touch /tmp/ran\"]\n",
    );
        let r = w.airlock(&["run", file.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stderr.contains("scope.yml:5:15"), "{}", r.stderr);
        assert!(
            r.stderr
                .contains("\"DEPLOY_TOKEN\" is out of scope for app/build"),
            "{}",
            r.stderr
        );
        let file = w.pipeline(
        "unknown.yml",
        "version: 1\nname: app\njobs:\n  deploy:\n    secrets: [NOPE_TOKEN]\n    steps: [\"true\"]\n",
    );
        let r = w.airlock(&["run", file.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr.contains("unknown secret \"NOPE_TOKEN\""),
            "{}",
            r.stderr
        );
        assert_eq!(w.airlock(&["runs", "list", "--json"]).stdout.trim(), "[]");
    }
);

e2e!(a_pinned_pipeline_name_cannot_be_claimed_by_the_file, |w| {
    // The secret belongs to pipeline "prod". A changed file (a pull
    // request) that calls itself "prod", run by a glue that pins the
    // identity of what it runs, is refused before anything runs.
    set_secret(w, "PROD_TOKEN", "prod-token-value-1", "prod/*");
    let claims = w.pipeline(
        "claims.yml",
        "version: 1\nname: prod\njobs:\n  steal:\n    secrets: [PROD_TOKEN]\n    steps: [\"touch /tmp/ran\"]\n",
    );
    let path = claims.to_str().unwrap();
    let r = w.airlock(&["run", path, "--pipeline", "pr-123"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{path}:2:7: the pipeline calls itself \"prod\", but this run is for \"pr-123\" (--pipeline)"
        )),
        "{}",
        r.stderr
    );
    assert_eq!(w.airlock(&["runs", "list", "--json"]).stdout.trim(), "[]");
    // Without the pin, the file's own name counts (as it always did).
    let r = w.airlock(&["run", path]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A file without a name gets the pinned one, and the secrets of it.
    let unnamed = w.pipeline(
        "deploy.yml",
        "version: 1\njobs:\n  deploy:\n    secrets: [PROD_TOKEN]\n    steps: [\"test -s /run/secrets/PROD_TOKEN\"]\n",
    );
    let r = w.airlock(&["run", unnamed.to_str().unwrap(), "--pipeline", "prod"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let r = w.airlock(&["run", unnamed.to_str().unwrap(), "--pipeline", "Not A Name"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("expected a pipeline name"),
        "{}",
        r.stderr
    );
});

e2e!(
    leases_are_revoked_after_failure_timeout_and_a_killed_runner,
    |w| {
        set_secret(w, "TOKEN", "lease-test-value-9", "life/*");
        let file = w.pipeline(
        "life.yml",
        "version: 1\nname: life\njobs:\n  fails:\n    secrets: [TOKEN]\n    steps: [\"exit 3\"]\n  slow:\n    secrets: [TOKEN]\n    steps:\n      - run: sleep 30\n        timeout: 1s\n",
    );
        let r = w.airlock(&["run", file.to_str().unwrap()]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let leases: Value =
            serde_json::from_str(&w.airlock(&["secrets", "leases", "--json"]).stdout).unwrap();
        assert_eq!(leases.as_array().unwrap().len(), 2, "{leases}");
        assert!(
            leases
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["state"] == "revoked"),
            "{leases}"
        );

        // A runner killed mid-job: the next command revokes its leases, and
        // /run/secrets is gone with the job's mount namespace.
        let marker = "210987.5";
        let crash = w.pipeline(
        "crash.yml",
        &format!("version: 1\nname: life\njobs:\n  hold:\n    secrets: [TOKEN]\n    steps: [\"sleep {marker}\"]\n"),
    );
        kill_runner_mid_job(w, &crash, marker);
        let r = w.airlock(&["runs", "list"]);
        assert!(
            r.stderr.contains("revoked 1 lease(s) of lost run"),
            "{}",
            r.stderr
        );
        let leases: Value =
            serde_json::from_str(&w.airlock(&["secrets", "leases", "--json"]).stdout).unwrap();
        assert!(
            leases
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["state"] != "active"),
            "{leases}"
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains("/run/secrets"), "{mounts}");
    }
);

e2e!(age_encrypted_secrets_import_with_the_real_age_tool, |w| {
    if Command::new("age").arg("--version").output().is_err() {
        eprintln!("SKIPPED: the age tool is not installed (apt-get install age)");
        return;
    }
    let dir = w.files.path();
    let key = dir.join("key.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let recipient = String::from_utf8_lossy(&out.stderr)
        .trim()
        .trim_start_matches("Public key: ")
        .to_string();
    std::fs::write(
        dir.join("plain.env"),
        "IMPORTED_TOKEN=imported-from-age-1\n",
    )
    .unwrap();
    let enc = dir.join("secrets.age");
    let st = Command::new("age")
        .args(["-r", &recipient, "-o"])
        .arg(&enc)
        .arg(dir.join("plain.env"))
        .status()
        .unwrap();
    assert!(st.success());
    let r = w.airlock(&[
        "secrets",
        "import",
        "--age",
        enc.to_str().unwrap(),
        "--identity",
        key.to_str().unwrap(),
        "--scope",
        "imp/*",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let file = w.pipeline(
        "imp.yml",
        "version: 1\nname: imp\njobs:\n  a:\n    secrets: [IMPORTED_TOKEN]\n    steps: [\"test $(cat /run/secrets/IMPORTED_TOKEN) = imported-from-age-1 && echo match\"]\n",
    );
    let r = w.airlock(&["run", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("match"), "{}", r.stdout);
});

fn base64_of(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = c.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - c.len()));
        for i in 0..=c.len() {
            s.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    s
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

e2e!(a_flood_of_refused_masks_is_counted_not_listed, |w| {
    // 100,000 values too short to mask: 16 warnings and one count, not
    // 100,000 entries in the audit log and lines on the terminal.
    let file = w.pipeline(
        "flood.yml",
        "version: 1\nname: flood\njobs:\n  flood:\n    steps: [\"yes ab | head -n 100000 > /run/airlock/mask\"]\n",
    );
    let r = w.airlock(&["run", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout.matches("warning: mask refused").count(),
        17,
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "99984 more values to mask were refused (at most 16 refusals are reported one by one)"
        ),
        "{}",
        r.stdout
    );
    let refused = audit_kinds(w)
        .iter()
        .filter(|k| *k == "mask_refused")
        .count();
    assert_eq!(refused, 17);
});

e2e!(output_past_the_limit_is_dropped_and_the_job_runs_on, |w| {
    // With a 1 MiB limit, the job writes 10 bytes short of it, then a
    // secret (which the limit cuts after its first 10 bytes), then 2 MiB
    // more, and a second step checks that the first one ran to its end.
    let secret = "Cut-s3cret-token-value-0042";
    set_secret(w, "CUT", secret, "cut/*");
    let file = w.pipeline(
        "cut.yml",
        r#"version: 1
name: cut
jobs:
  cut:
    secrets: [{ name: CUT, env: CUT }]
    steps:
      - run: |
          head -c $((1048576 - 10)) /dev/zero | tr '\0' x
          printf '%s\n' "$CUT"
          head -c 2097152 /dev/zero | tr '\0' y
          touch /workspace/ran-on
      - run: test -f /workspace/ran-on && echo second-step-output
"#,
    );
    let r = w.airlock(&["run", file.to_str().unwrap(), "--max-output", "1MiB"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("warning: output past 1 MiB is not kept or shown; the job runs on"),
        "{}",
        &r.stdout[r.stdout.len().saturating_sub(2000)..]
    );
    assert!(
        r.stdout.contains("warning: 2.0 MiB of output dropped"),
        "{}",
        &r.stdout[r.stdout.len().saturating_sub(2000)..]
    );
    assert!(!r.stdout.contains("│ second-step-output"));
    let log = std::fs::read_to_string(w.home.path().join("runs/1/logs/cut.log")).unwrap();
    let longest = |c: char| log.split(|d| d != c).map(str::len).max().unwrap_or(0);
    assert_eq!(
        longest('x'),
        1_048_566,
        "every byte below the limit is kept"
    );
    assert!(longest('y') < 2, "nothing past the limit is kept");
    assert!(log.contains("── output past 1 MiB is not kept; the job runs on"));
    // The secret's first bytes, held back when the limit cut it, are
    // dropped with the rest, not released.
    assert_no_file_holds(w.home.path(), &[&secret[..10]]);
    let audit = w.airlock(&["audit", "show", "--json"]).stdout;
    let dropped: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "output_dropped" || v["kind"] == "output_limited")
        .collect();
    // 1,048,566 + 28 + 2,097,152 + 19 bytes written, 1,048,576 kept.
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert_eq!(dropped[0]["limit"], 1_048_576);
    assert_eq!(dropped[1]["bytes"], 2_097_189);
    // The run record says where the log was cut.
    let record = w.show("1");
    let cut = &job(&record, "cut")["output_cut"];
    assert_eq!(cut["limit"], 1_048_576, "{cut}");
    assert_eq!(cut["dropped"], 2_097_189, "{cut}");
    let shown = w.airlock(&["runs", "show", "1"]).stdout;
    assert!(
        shown.contains("log: cut at 1 MiB (--max-output): 2.0 MiB more output was not kept"),
        "{shown}"
    );
});

/// The kinds of the audit log's entries, in order.
fn audit_kinds(w: &World) -> Vec<String> {
    let r = w.airlock(&["audit", "show", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["kind"].as_str().unwrap().to_string()
        })
        .collect()
}

fn audit_verify(w: &World) -> Ran {
    w.airlock(&["audit", "verify"])
}

// Runs started at the same moment on a new home, as a CI host's first
// jobs are, each get a run of their own, and the audit log holds every
// one of them. (Opening a new database at once used to fail one of them
// with "database is locked", in about one round of 20.)
e2e!(runs_started_at_once_on_a_new_home_all_land, |w| {
    const RUNS: usize = 4;
    let file = w.pipeline("ok.yml", "version: 1\njobs:\n  a:\n    steps: [\"true\"]\n");
    for round in 0..5 {
        let home = w.files.path().join(format!("home-{round}"));
        let airlock = |args: &[&str]| {
            let mut cmd = Command::new(BIN);
            cmd.arg("--home").arg(&home).args(args).stdin(Stdio::null());
            cmd
        };
        let children: Vec<_> = (0..RUNS)
            .map(|_| {
                airlock(&["run", file.to_str().unwrap(), "--json"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut ids = Vec::new();
        for child in children {
            let r = ran(child.wait_with_output().unwrap());
            assert_eq!(r.code, 0, "round {round}: {}", r.stderr);
            let doc: Value = serde_json::from_str(&r.stdout).unwrap();
            assert_eq!(doc["status"], "success", "{doc}");
            ids.push(doc["run"].as_u64().unwrap());
        }
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3, 4]);
        let verify = ran(airlock(&["audit", "verify"]).output().unwrap());
        assert_eq!(verify.code, 0, "{}", verify.stderr);
        let shown = ran(airlock(&["audit", "show", "--json"]).output().unwrap());
        let finished = shown
            .stdout
            .lines()
            .filter(|l| l.contains("\"run_finished\""))
            .count();
        assert_eq!(finished, RUNS, "{}", shown.stdout);
    }
});

e2e!(audit_log_records_every_kind_of_event, |w| {
    // Store changes: set, rotate, remove.
    set_secret(w, "AUDIT_TOKEN", "audit-token-value-1", "audited/*");
    set_secret(w, "GONE_TOKEN", "gone-token-value-1", "audited/*");
    let r = w.airlock(&["secrets", "rotate", "AUDIT_TOKEN", "--generate", "24"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = w.airlock(&["secrets", "rm", "GONE_TOKEN"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A run with a lease, its revocation, a mask added and one refused, a
    // failed job and a skipped dependant.
    let file = w.pipeline(
        "audited.yml",
        r#"version: 1
name: audited
jobs:
  a:
    secrets: [AUDIT_TOKEN]
    steps:
      - run: |
          echo "registered-$((40 + 2))-value" > /run/airlock/mask
          echo "abc" > /run/airlock/mask
          exit 1
  b:
    needs: [a]
    steps: ["true"]
"#,
    );
    let r = w.airlock(&["run", file.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    // A denial: a job outside the secret's scope (exit 2, nothing runs).
    let denied = w.pipeline(
        "denied.yml",
        "version: 1\nname: other\njobs:\n  x:\n    secrets: [AUDIT_TOKEN]\n    steps: [\"true\"]\n",
    );
    assert_eq!(w.airlock(&["run", denied.to_str().unwrap()]).code, 2);
    // Crash recovery: a runner killed mid-job, then a torn write at the
    // log's end (as a crash mid-append leaves it).
    let crash = w.pipeline(
        "crash.yml",
        "version: 1\nname: audited\njobs:\n  hold:\n    secrets: [AUDIT_TOKEN]\n    steps: [\"sleep 310987.5\"]\n",
    );
    kill_runner_mid_job(w, &crash, "310987.5");
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(w.home.path().join("audit/entries.jsonl"))
            .unwrap();
        f.write_all(b"{\"index\":99,\"kind\":\"tor").unwrap();
    }
    let r = w.airlock(&["runs", "list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("torn write"), "{}", r.stderr);

    let kinds = audit_kinds(w);
    for want in [
        "audit_key_created",
        "secrets.set",
        "secrets.rotated",
        "secrets.removed",
        "run_started",
        "job_started",
        "sandbox_ready",
        "secrets.leased",
        "secret_leased",
        "mask_added",
        "mask_refused",
        "step_started",
        "step_finished",
        "job_finished",
        "secrets.revoked",
        "secret_revoked",
        "job_skipped",
        "run_finished",
        "secrets.denied",
        "run_lost",
        "cgroups_recovered",
        "audit_recovered",
    ] {
        assert!(kinds.iter().any(|k| k == want), "{want} missing: {kinds:?}");
    }
    // The layers in force are recorded with each sandbox.
    let show = w.airlock(&["audit", "show", "--json"]).stdout;
    let ready = show
        .lines()
        .find(|l| l.contains("\"sandbox_ready\""))
        .unwrap();
    assert!(
        ready.contains("\"seccomp\"") && ready.contains("\"landlock\""),
        "{ready}"
    );
    // Never a value.
    assert!(!show.contains("audit-token-value-1"), "{show}");
    assert!(!show.contains("registered-42-value"), "{show}");
    let r = audit_verify(w);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
});

e2e!(audit_verify_names_the_first_tampered_entry, |w| {
    let file = w.pipeline(
        "t.yml",
        "version: 1\njobs:\n  a:\n    steps: [\"true\", \"true\"]\n",
    );
    assert_eq!(w.airlock(&["run", file.to_str().unwrap()]).code, 0);
    assert_eq!(w.airlock(&["run", file.to_str().unwrap()]).code, 0);
    let r = audit_verify(w);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let path = w.home.path().join("audit/entries.jsonl");
    let original = std::fs::read_to_string(&path).unwrap();
    // One character of entry 5 ("success" -> "succesS", or a name).
    let lines: Vec<&str> = original.lines().collect();
    let edited: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == 5 {
                l.replacen("\"job\":\"a\"", "\"job\":\"b\"", 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_ne!(edited[5], lines[5]);
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    let r = audit_verify(w);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("FAILED at entry 5"), "{}", r.stdout);
    let json: Value =
        serde_json::from_str(&w.airlock(&["audit", "verify", "--json"]).stdout).unwrap();
    assert_eq!(json["first_bad"]["index"], 5, "{json}");
    // An entry deleted.
    let mut fewer = lines.clone();
    fewer.remove(3);
    std::fs::write(&path, fewer.join("\n") + "\n").unwrap();
    let r = audit_verify(w);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("FAILED at entry 3"), "{}", r.stdout);
    std::fs::write(&path, &original).unwrap();
    assert_eq!(audit_verify(w).code, 0);
});

e2e!(audit_proofs_and_checkpoints_verify_offline, |w| {
    let file = w.pipeline("p.yml", "version: 1\njobs:\n  a:\n    steps: [\"true\"]\n");
    assert_eq!(w.airlock(&["run", file.to_str().unwrap()]).code, 0);
    let old = w.files.path().join("old.note");
    let r = w.airlock(&["audit", "checkpoint"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("\n\n— airlock.audit/"), "{}", r.stdout);
    std::fs::write(&old, &r.stdout).unwrap();
    assert_eq!(w.airlock(&["run", file.to_str().unwrap()]).code, 0);
    let new = w.files.path().join("new.note");
    std::fs::write(&new, w.airlock(&["audit", "checkpoint"]).stdout).unwrap();
    // The old checkpoint, kept as a witness, is still part of the log.
    let r = w.airlock(&["audit", "verify", "--witness", old.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // Inclusion: the bundle verifies offline, with the pinned key only.
    let pinned = w.files.path().join("audit.pub");
    std::fs::copy(w.home.path().join("keys/audit.pub"), &pinned).unwrap();
    let bundle = w.files.path().join("bundle.json");
    let r = w.airlock(&["audit", "prove", "2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    std::fs::write(&bundle, &r.stdout).unwrap();
    let check = |path: &Path| {
        w.airlock(&[
            "audit",
            "verify",
            "--proof",
            path.to_str().unwrap(),
            "--key",
            pinned.to_str().unwrap(),
        ])
    };
    let r = check(&bundle);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("ok: entry 2 is in the log"),
        "{}",
        r.stdout
    );
    let mut forged: Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    forged["entry"] = Value::String(forged["entry"].as_str().unwrap().replacen(
        "\"job\":\"a\"",
        "\"job\":\"z\"",
        1,
    ));
    std::fs::write(&bundle, forged.to_string()).unwrap();
    assert_eq!(check(&bundle).code, 1);

    // Consistency between the two checkpoints.
    let r = w.airlock(&[
        "audit",
        "consistency",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let proof = w.files.path().join("consistency.json");
    std::fs::write(&proof, &r.stdout).unwrap();
    assert_eq!(check(&proof).code, 0);
});

#[test]
fn a_reader_that_goes_away_is_not_an_error() {
    let w = World::new();
    let file = w.pipeline(
        "many.yml",
        "version: 1\nname: many\njobs:\n  a:\n    steps:\n      - run: for i in $(seq 1000); do /bin/true; done\n",
    );
    assert_eq!(w.airlock(&["run", file.to_str().unwrap()]).code, 0);
    // `runs show --json | head -c 1`: the reader closes the pipe long
    // before the record (1,000 processes, over 64 KiB) is written.
    let mut child = w
        .command(&["runs", "show", "latest", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    drop(out);
    let r = ran(child.wait_with_output().unwrap());
    assert_eq!(first, *b"{");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("error"), "{}", r.stderr);
}
