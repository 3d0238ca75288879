//! The run record against a real SQLite database in a temporary home.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;

use state::{
    Egress, JobEnd, NewJob, NewRun, OutputCut, RunId, StateError, Status, Store, Timestamp,
};
use tempfile::TempDir;

/// Whole milliseconds from `a` to `b`.
fn millis(a: Timestamp, b: Timestamp) -> u64 {
    u64::try_from(a.until(b).as_millis()).expect("a test duration fits in u64")
}

fn home() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("home")).expect("open store");
    (dir, store)
}

fn job(id: &str, needs: &[&str], steps: &[&str]) -> NewJob {
    NewJob {
        id: id.into(),
        needs: needs.iter().map(|s| (*s).into()).collect(),
        steps: steps.iter().map(|s| (*s).into()).collect(),
    }
}

fn run(pipeline: &str, jobs: Vec<NewJob>) -> NewRun {
    NewRun {
        pipeline: pipeline.into(),
        file: PathBuf::from(format!("/src/{pipeline}/airlock.yml")),
        jobs,
        degraded: Vec::new(),
    }
}

fn end(status: Status, exit_code: Option<i32>) -> JobEnd {
    JobEnd {
        status,
        exit_code,
        reason: None,
        log_path: None,
        artifacts: Vec::new(),
    }
}

/// A second connection, to look at or tamper with what the store wrote.
fn raw(store: &Store) -> rusqlite::Connection {
    rusqlite::Connection::open(store.db_path()).expect("raw connection")
}

fn count(conn: &rusqlite::Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
        row.get(0)
    })
    .expect("count")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn empty_store() {
    let (_dir, store) = home();
    assert_eq!(store.latest_run().expect("latest"), None);
    assert!(store.list_runs(10).expect("list").is_empty());
    assert_eq!(store.get_run(1).expect("get"), None);
    assert!(store.recover_lost_runs().expect("recover").is_empty());
}

#[test]
fn get_run_returns_exactly_what_was_written() {
    let (_dir, store) = home();
    let before = Timestamp::now();
    let degraded = vec![
        "cgroups: not available to an unprivileged user; allowed by --allow-degraded cgroups"
            .to_owned(),
        "seccomp: \"quoted\", [bracketed] and non-ASCII \u{e9} text survive".to_owned(),
    ];
    let id = store
        .begin_run(&NewRun {
            degraded: degraded.clone(),
            ..run(
                "demo",
                vec![
                    job("lint", &[], &["fmt", "clippy"]),
                    job("build", &["lint"], &["compile", "link", "strip"]),
                    job("deploy", &["build", "lint"], &["push"]),
                ],
            )
        })
        .expect("begin");
    assert_eq!(id, 1);
    assert!(store.run_dir(id).is_dir());

    store.job_started(id, "lint").expect("lint start");
    for index in 0..2 {
        store.step_started(id, "lint", index).expect("step start");
        store
            .step_finished(id, "lint", index, Status::Success, Some(0))
            .expect("step end");
    }
    let lint_log = store.run_dir(id).join("lint.log");
    store
        .job_finished(
            id,
            "lint",
            &JobEnd {
                status: Status::Success,
                exit_code: Some(0),
                reason: None,
                log_path: Some(lint_log.clone()),
                artifacts: vec!["report.txt".into(), "dir/a b.bin".into()],
            },
        )
        .expect("lint end");

    store.job_started(id, "build").expect("build start");
    store.step_started(id, "build", 0).expect("step start");
    store
        .step_finished(id, "build", 0, Status::Failed, Some(2))
        .expect("step end");
    store
        .job_finished(
            id,
            "build",
            &JobEnd {
                status: Status::Failed,
                exit_code: Some(2),
                reason: Some("step compile exited 2".into()),
                log_path: None,
                artifacts: Vec::new(),
            },
        )
        .expect("build end");
    store
        .job_finished(
            id,
            "deploy",
            &JobEnd {
                reason: Some("needs build, which failed".into()),
                ..end(Status::Skipped, None)
            },
        )
        .expect("deploy end");
    store.run_finished(id, Status::Failed, 1).expect("run end");
    let after = Timestamp::now();

    let record = store.get_run(id).expect("get").expect("run exists");
    let summary = &record.summary;
    assert_eq!(summary.id, id);
    assert_eq!(summary.pipeline, "demo");
    assert_eq!(summary.file, Path::new("/src/demo/airlock.yml"));
    assert_eq!(summary.status, Status::Failed);
    assert_eq!(summary.exit_code, Some(1));
    let finished = summary.finished_at.expect("run finished_at");
    assert!(before <= summary.started_at && summary.started_at <= finished && finished <= after);
    assert_eq!(
        summary.duration_ms,
        Some(millis(summary.started_at, finished))
    );
    assert_eq!(
        (
            summary.jobs_total,
            summary.jobs_succeeded,
            summary.jobs_failed,
            summary.jobs_skipped
        ),
        (3, 1, 1, 1)
    );
    assert_eq!(summary.degraded, degraded);

    let ids: Vec<_> = record.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["lint", "build", "deploy"], "jobs in insertion order");

    let lint = &record.jobs[0];
    assert_eq!(lint.needs, Vec::<String>::new());
    assert_eq!(lint.status, Status::Success);
    assert_eq!(lint.exit_code, Some(0));
    assert_eq!(lint.reason, None);
    assert_eq!(lint.log_path.as_deref(), Some(lint_log.as_path()));
    assert_eq!(lint.artifacts, ["report.txt", "dir/a b.bin"]);
    let (start, stop) = (
        lint.started_at.expect("lint started"),
        lint.finished_at.expect("lint finished"),
    );
    assert!(summary.started_at <= start && start <= stop && stop <= finished);
    assert_eq!(lint.duration_ms, Some(millis(start, stop)));
    assert_eq!(lint.steps.len(), 2);
    for (index, (step, name)) in lint.steps.iter().zip(["fmt", "clippy"]).enumerate() {
        assert_eq!(step.index, index);
        assert_eq!(step.name, name);
        assert_eq!(step.status, Status::Success);
        assert_eq!(step.exit_code, Some(0));
        let (s, f) = (
            step.started_at.expect("started"),
            step.finished_at.expect("finished"),
        );
        assert!(start <= s && s <= f && f <= stop);
        assert_eq!(step.duration_ms, Some(millis(s, f)));
    }

    let build = &record.jobs[1];
    assert_eq!(build.needs, ["lint"]);
    assert_eq!(build.status, Status::Failed);
    assert_eq!(build.exit_code, Some(2));
    assert_eq!(build.reason.as_deref(), Some("step compile exited 2"));
    assert_eq!(build.log_path, None);
    assert!(build.artifacts.is_empty());
    let statuses: Vec<_> = build
        .steps
        .iter()
        .map(|s| (s.status, s.exit_code))
        .collect();
    assert_eq!(
        statuses,
        [
            (Status::Failed, Some(2)),
            (Status::Skipped, None),
            (Status::Skipped, None)
        ]
    );
    assert_eq!(
        build
            .steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["compile", "link", "strip"]
    );

    let deploy = &record.jobs[2];
    assert_eq!(deploy.needs, ["build", "lint"]);
    assert_eq!(deploy.status, Status::Skipped);
    assert_eq!(deploy.reason.as_deref(), Some("needs build, which failed"));
    assert_eq!(deploy.started_at, None, "a skipped job never started");
    assert!(deploy.finished_at.is_some());
    assert_eq!(deploy.duration_ms, None);
    assert_eq!(deploy.steps[0].status, Status::Skipped);
    assert_eq!(
        (deploy.steps[0].started_at, deploy.steps[0].finished_at),
        (None, None)
    );

    // list_runs shows the same summary.
    assert_eq!(
        store.list_runs(1).expect("list"),
        vec![record.summary.clone()]
    );
}

#[test]
fn run_record_json_shape() {
    let (_dir, store) = home();
    let id = store
        .begin_run(&run("demo", vec![job("a", &[], &["one"])]))
        .expect("begin");
    let json =
        serde_json::to_value(store.get_run(id).expect("get").expect("exists")).expect("serialize");
    assert_eq!(json["id"], 1);
    assert_eq!(json["pipeline"], "demo");
    assert_eq!(json["status"], "running");
    assert_eq!(json["exit_code"], serde_json::Value::Null);
    assert_eq!(json["jobs_total"], 1);
    assert_eq!(json["degraded"], serde_json::json!([]), "always present");
    let started = json["started_at"].as_str().expect("RFC 3339 string");
    assert!(
        started.len() == 24 && started.ends_with('Z') && started.as_bytes()[10] == b'T',
        "{started}"
    );
    assert_eq!(json["jobs"][0]["id"], "a");
    assert_eq!(json["jobs"][0]["status"], "pending");
    assert_eq!(json["jobs"][0]["steps"][0]["name"], "one");
    assert_eq!(json["jobs"][0]["steps"][0]["index"], 0);
    assert!(json.get("summary").is_none(), "summary is flattened");
}

/// Begins a run of two jobs, `a` and `b`, of one step each.
fn begin_jobs_a_and_b(store: &Store) -> RunId {
    store
        .begin_run(&run(
            "demo",
            vec![job("a", &[], &["one"]), job("b", &[], &["one"])],
        ))
        .expect("begin")
}

#[test]
fn where_a_log_was_cut_is_recorded() {
    let (_dir, store) = home();
    let id = begin_jobs_a_and_b(&store);
    store.output_limited(id, "b", 1 << 20).expect("limited");
    let cut = |store: &Store| {
        let record = store.get_run(id).expect("get").expect("exists");
        (record.jobs[0].output_cut, record.jobs[1].output_cut)
    };
    // Reached, and the job not yet ended: nothing counted past it yet.
    let reached = OutputCut {
        limit: 1 << 20,
        dropped: 0,
    };
    assert_eq!(cut(&store), (None, Some(reached)));
    store.output_dropped(id, "b", 2_097_189).expect("dropped");
    let ended = OutputCut {
        dropped: 2_097_189,
        ..reached
    };
    assert_eq!(cut(&store), (None, Some(ended)));
    let json =
        serde_json::to_value(store.get_run(id).expect("get").expect("exists")).expect("serialize");
    assert_eq!(json["jobs"][0]["output_cut"], serde_json::Value::Null);
    assert_eq!(
        json["jobs"][1]["output_cut"],
        serde_json::json!({ "limit": 1_048_576, "dropped": 2_097_189 })
    );
    assert!(matches!(
        store.output_limited(id, "nope", 1),
        Err(StateError::UnknownJob { .. })
    ));
    assert!(matches!(
        store.output_dropped(99, "a", 1),
        Err(StateError::UnknownRun { .. })
    ));
}

#[test]
fn egress_is_recorded_per_job_in_order() {
    let (_dir, store) = home();
    let id = begin_jobs_a_and_b(&store);
    let allowed = Egress {
        at: Timestamp::from_unix_millis(1_700_000_000_000),
        kind: "connect".into(),
        host: "example.org".into(),
        port: 443,
        addr: Some("93.184.215.14:443".into()),
        allowed: true,
        detail: "example.org:443".into(),
        bytes_up: 517,
        bytes_down: 1 << 40,
        duration_ms: 1234,
    };
    let denied = Egress {
        kind: "dns".into(),
        host: "exfil.attacker.test".into(),
        port: 53,
        addr: None,
        allowed: false,
        detail: "name not in this job's allowlist".into(),
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: 0,
        ..allowed.clone()
    };
    store.egress(id, "b", &allowed).expect("record");
    store.egress(id, "b", &denied).expect("record");
    let record = store.get_run(id).expect("get").expect("exists");
    assert_eq!(record.jobs[0].egress, vec![]);
    assert_eq!(record.jobs[1].egress, vec![allowed.clone(), denied]);
    let json = serde_json::to_value(&record).expect("serialize");
    assert_eq!(json["jobs"][1]["egress"][0]["host"], "example.org");
    assert_eq!(json["jobs"][1]["egress"][1]["allowed"], false);
    assert!(matches!(
        store.egress(id, "nope", &allowed),
        Err(StateError::UnknownJob { .. })
    ));
}

#[test]
fn list_runs_newest_first_with_counts() {
    let (_dir, store) = home();
    let mut ids = Vec::new();
    for (n, pipeline) in ["one", "two", "three"].into_iter().enumerate() {
        let jobs = (0..=n)
            .map(|j| job(&format!("j{j}"), &[], &["s"]))
            .collect();
        let id = store.begin_run(&run(pipeline, jobs)).expect("begin");
        assert_eq!(store.latest_run().expect("latest"), Some(id));
        ids.push(id);
    }
    assert_eq!(ids, [1, 2, 3]);
    store
        .job_finished(3, "j0", &end(Status::Success, Some(0)))
        .expect("end");
    store
        .job_finished(3, "j1", &end(Status::Timeout, None))
        .expect("end");
    store.run_finished(3, Status::Failed, 1).expect("run end");

    let all = store.list_runs(10).expect("list");
    let listed: Vec<_> = all.iter().map(|r| (r.id, r.pipeline.as_str())).collect();
    assert_eq!(listed, [(3, "three"), (2, "two"), (1, "one")]);
    let counts: Vec<_> = all
        .iter()
        .map(|r| {
            (
                r.jobs_total,
                r.jobs_succeeded,
                r.jobs_failed,
                r.jobs_skipped,
            )
        })
        .collect();
    // Run 3's third job was still pending when the run finished: skipped.
    assert_eq!(counts, [(3, 1, 1, 1), (2, 0, 0, 0), (1, 0, 0, 0)]);
    assert_eq!(all[1].status, Status::Running);
    assert_eq!((all[1].finished_at, all[1].duration_ms), (None, None));

    let two: Vec<_> = store
        .list_runs(2)
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(two, [3, 2]);
    assert!(store.list_runs(0).expect("list").is_empty());
    assert_eq!(store.list_runs(usize::MAX).expect("list").len(), 3);
}

#[test]
fn job_finished_closes_leftover_steps_in_one_transaction() {
    let (_dir, store) = home();
    let id = store
        .begin_run(&run("demo", vec![job("a", &[], &["one", "two", "three"])]))
        .expect("begin");
    store.job_started(id, "a").expect("start");
    store.step_started(id, "a", 0).expect("step start");
    store
        .job_finished(
            id,
            "a",
            &JobEnd {
                reason: Some("timed out after 10m".into()),
                ..end(Status::Timeout, None)
            },
        )
        .expect("end");
    let job = &store.get_run(id).expect("get").expect("exists").jobs[0];
    assert_eq!(job.status, Status::Timeout);
    let running = &job.steps[0];
    assert_eq!(
        running.status,
        Status::Timeout,
        "running step takes the job's status"
    );
    assert_eq!(running.exit_code, None);
    assert!(running.started_at.is_some() && running.finished_at.is_some());
    for pending in &job.steps[1..] {
        assert_eq!(pending.status, Status::Skipped);
        assert_eq!((pending.started_at, pending.finished_at), (None, None));
    }

    // A failing job_finished changes nothing, not even part of the record.
    let before = store.get_run(id).expect("get");
    let err = store
        .job_finished(id, "nope", &end(Status::Success, Some(0)))
        .expect_err("unknown job");
    assert!(
        matches!(&err, StateError::UnknownJob { run: 1, job } if job == "nope"),
        "{err}"
    );
    assert_eq!(store.get_run(id).expect("get"), before);
}

#[test]
fn job_finished_is_atomic_when_the_database_refuses_part_of_it() {
    let (_dir, store) = home();
    let id = store
        .begin_run(&run("demo", vec![job("a", &[], &["one", "two"])]))
        .expect("begin");
    store.job_started(id, "a").expect("start");
    // Make the step update (the second statement) fail.
    raw(&store)
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE UPDATE ON steps BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .expect("trigger");
    let err = store
        .job_finished(id, "a", &end(Status::Failed, Some(1)))
        .expect_err("trigger refuses the step update");
    assert!(matches!(err, StateError::RunSql { run: 1, .. }), "{err}");
    assert!(err.to_string().contains("run 1"), "{err}");
    let job = &store.get_run(id).expect("get").expect("exists").jobs[0];
    assert_eq!(job.status, Status::Running, "job row rolled back too");
    assert_eq!(job.finished_at, None);
}

#[test]
fn run_finished_closes_what_is_left_open() {
    let (_dir, store) = home();
    let id = store
        .begin_run(&run(
            "demo",
            vec![job("a", &[], &["one", "two"]), job("b", &["a"], &["one"])],
        ))
        .expect("begin");
    store.job_started(id, "a").expect("start");
    store.step_started(id, "a", 0).expect("step");
    store.run_finished(id, Status::Cancelled, 130).expect("end");
    let record = store.get_run(id).expect("get").expect("exists");
    assert_eq!(record.summary.status, Status::Cancelled);
    assert_eq!(record.summary.exit_code, Some(130));
    let a = &record.jobs[0];
    assert_eq!(a.status, Status::Cancelled);
    assert!(a.finished_at.is_some());
    assert_eq!(
        a.steps.iter().map(|s| s.status).collect::<Vec<_>>(),
        [Status::Cancelled, Status::Skipped]
    );
    let b = &record.jobs[1];
    assert_eq!(
        (b.status, b.steps[0].status),
        (Status::Skipped, Status::Skipped)
    );
    assert_eq!(record.summary.jobs_failed, 1);
    assert_eq!(record.summary.jobs_skipped, 1);
}

#[test]
fn unknown_ids_and_non_final_statuses_are_errors() {
    let (_dir, store) = home();
    let id = store
        .begin_run(&run("demo", vec![job("a", &[], &["one"])]))
        .expect("begin");
    let err = store.job_started(7, "a").expect_err("unknown run");
    assert!(matches!(err, StateError::UnknownRun { run: 7 }), "{err}");
    let err = store.job_started(id, "b").expect_err("unknown job");
    assert_eq!(err.to_string(), "run 1: unknown job \"b\"");
    let err = store.step_started(id, "a", 1).expect_err("unknown step");
    assert_eq!(err.to_string(), "run 1: job \"a\" has no step 1");
    let err = store
        .step_finished(id, "a", usize::MAX, Status::Success, Some(0))
        .expect_err("unknown step");
    assert!(matches!(err, StateError::UnknownStep { .. }), "{err}");
    let err = store
        .step_finished(id, "b", 0, Status::Success, Some(0))
        .expect_err("unknown job");
    assert!(matches!(err, StateError::UnknownJob { .. }), "{err}");
    let err = store
        .step_finished(id, "a", 0, Status::Running, None)
        .expect_err("not final");
    assert_eq!(err.to_string(), "run 1: running is not a final status");
    let err = store
        .job_finished(id, "a", &end(Status::Pending, None))
        .expect_err("not final");
    assert!(matches!(err, StateError::NotTerminal { .. }), "{err}");
    let err = store
        .run_finished(9, Status::Success, 0)
        .expect_err("unknown run");
    assert!(matches!(err, StateError::UnknownRun { run: 9 }), "{err}");
    let err = store
        .run_finished(id, Status::Running, 0)
        .expect_err("not final");
    assert!(matches!(err, StateError::NotTerminal { .. }), "{err}");
}

#[test]
fn begin_run_is_one_transaction() {
    let (_dir, store) = home();
    let err = store
        .begin_run(&run(
            "demo",
            vec![
                job("a", &[], &["one", "two"]),
                job("b", &["a"], &["one"]),
                job("a", &[], &["again"]),
            ],
        ))
        .expect_err("duplicate job id");
    assert!(
        matches!(&err, StateError::DuplicateJob { job } if job == "a"),
        "{err}"
    );
    let conn = raw(&store);
    assert_eq!(
        (
            count(&conn, "runs"),
            count(&conn, "jobs"),
            count(&conn, "steps")
        ),
        (0, 0, 0),
        "the run row and the jobs and steps before the failure were rolled back"
    );
    assert_eq!(store.latest_run().expect("latest"), None);
    let runs_dir = store.home().join("runs");
    assert_eq!(fs::read_dir(&runs_dir).expect("runs dir").count(), 0);

    // The store is still usable, and the failed attempt left no trace.
    let id = store
        .begin_run(&run("demo", vec![job("a", &[], &["one"])]))
        .expect("begin");
    assert_eq!(id, 1);
    assert_eq!(count(&conn, "jobs"), 1);
}

#[test]
fn begin_run_refuses_an_existing_run_dir() {
    let (_dir, store) = home();
    fs::create_dir(store.run_dir(1)).expect("stale dir");
    fs::write(store.run_dir(1).join("a.log"), "old").expect("stale log");
    let err = store
        .begin_run(&run("demo", vec![job("a", &[], &["one"])]))
        .expect_err("stale run dir");
    assert!(matches!(err, StateError::RunDirExists { .. }), "{err}");
    assert_eq!(count(&raw(&store), "runs"), 0);
    assert_eq!(
        fs::read_to_string(store.run_dir(1).join("a.log")).expect("untouched"),
        "old"
    );
}

#[test]
fn run_ids_are_not_reused_after_deletion() {
    let (_dir, store) = home();
    let first = store.begin_run(&run("demo", vec![])).expect("begin");
    raw(&store)
        .execute("DELETE FROM runs WHERE id = ?1", [first])
        .expect("delete");
    fs::remove_dir(store.run_dir(first)).expect("rmdir");
    let second = store.begin_run(&run("demo", vec![])).expect("begin");
    assert_eq!((first, second), (1, 2));
}

#[test]
fn non_utf8_paths_round_trip() {
    let (_dir, store) = home();
    let file = PathBuf::from(OsStr::from_bytes(b"/src/\xffpipeline.yml"));
    let log = PathBuf::from(OsStr::from_bytes(b"/logs/\xfe.log"));
    let id = store
        .begin_run(&NewRun {
            pipeline: "demo".into(),
            file: file.clone(),
            jobs: vec![job("a", &[], &[])],
            degraded: Vec::new(),
        })
        .expect("begin");
    store
        .job_finished(
            id,
            "a",
            &JobEnd {
                log_path: Some(log.clone()),
                ..end(Status::Success, Some(0))
            },
        )
        .expect("end");
    let record = store.get_run(id).expect("get").expect("exists");
    assert_eq!(record.summary.file, file);
    assert_eq!(record.jobs[0].log_path, Some(log));
}

/// Marks run `id` in the database as started by `pid` at `start_time`.
fn set_runner(store: &Store, id: i64, pid: u32, start_time: Option<i64>) {
    raw(store)
        .execute(
            "UPDATE runs SET runner_pid = ?2, runner_start_time = ?3 WHERE id = ?1",
            rusqlite::params![id, pid, start_time],
        )
        .expect("tamper");
}

fn runner(store: &Store, id: i64) -> (u32, Option<i64>) {
    raw(store)
        .query_row(
            "SELECT runner_pid, runner_start_time FROM runs WHERE id = ?1",
            [id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("runner")
}

#[test]
fn recover_lost_runs() {
    let (_dir, store) = home();
    let new = || {
        run(
            "demo",
            vec![
                job("done", &[], &["one"]),
                job("busy", &["done"], &["one", "two"]),
                job("later", &["busy"], &["one"]),
            ],
        )
    };
    // 1: its runner exited.
    let dead = store.begin_run(&new()).expect("begin");
    store.job_started(dead, "done").expect("start");
    store.step_started(dead, "done", 0).expect("step");
    store
        .step_finished(dead, "done", 0, Status::Success, Some(0))
        .expect("step");
    store
        .job_finished(dead, "done", &end(Status::Success, Some(0)))
        .expect("end");
    store.job_started(dead, "busy").expect("start");
    store.step_started(dead, "busy", 0).expect("step");
    store
        .step_finished(dead, "busy", 0, Status::Success, Some(0))
        .expect("step");
    store.step_started(dead, "busy", 1).expect("step");
    let mut child = Command::new("true").spawn().expect("spawn true");
    let dead_pid = child.id();
    child.wait().expect("wait true");
    let (_, my_start) = runner(&store, dead);
    set_runner(&store, dead, dead_pid, my_start);
    // 2: this process's own run, in progress.
    let mine = store.begin_run(&new()).expect("begin");
    store.job_started(mine, "busy").expect("start");
    // 3: this pid, but a different process (the pid was reused).
    let reused = store.begin_run(&new()).expect("begin");
    let (my_pid, my_start) = runner(&store, reused);
    assert_eq!(my_pid, std::process::id());
    set_runner(
        &store,
        reused,
        my_pid,
        Some(my_start.expect("this host has /proc") + 1),
    );
    // 4: finished runs are never touched, whoever ran them.
    let finished = store.begin_run(&new()).expect("begin");
    store
        .run_finished(finished, Status::Success, 0)
        .expect("end");
    set_runner(&store, finished, dead_pid, my_start);

    assert_eq!(store.recover_lost_runs().expect("recover"), [dead, reused]);
    assert!(
        store.recover_lost_runs().expect("again").is_empty(),
        "idempotent"
    );

    let record = store.get_run(dead).expect("get").expect("exists");
    assert_eq!(record.summary.status, Status::Lost);
    assert_eq!(record.summary.exit_code, None);
    assert_eq!(record.summary.finished_at, None, "when it ended is unknown");
    let statuses: BTreeMap<_, _> = record
        .jobs
        .iter()
        .map(|j| {
            (
                j.id.as_str(),
                (
                    j.status,
                    j.steps.iter().map(|s| s.status).collect::<Vec<_>>(),
                ),
            )
        })
        .collect();
    assert_eq!(statuses["done"], (Status::Success, vec![Status::Success]));
    assert_eq!(
        statuses["busy"],
        (Status::Lost, vec![Status::Success, Status::Lost])
    );
    assert_eq!(statuses["later"], (Status::Lost, vec![Status::Lost]));
    assert_eq!(record.summary.jobs_failed, 2);

    let mine = store.get_run(mine).expect("get").expect("exists");
    assert_eq!(mine.summary.status, Status::Running);
    assert_eq!(mine.jobs[1].status, Status::Running);
    assert_eq!(mine.jobs[2].status, Status::Pending);

    let reused = store.get_run(reused).expect("get").expect("exists");
    assert_eq!(reused.summary.status, Status::Lost);
    assert!(reused.jobs.iter().all(|j| j.status == Status::Lost));

    let finished = store.get_run(finished).expect("get").expect("exists");
    assert_eq!(finished.summary.status, Status::Success);
}

#[test]
fn concurrent_writers_in_one_process() {
    const JOBS: usize = 8;
    const STEPS: usize = 25;
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = [
        Arc::new(Store::open(dir.path()).expect("open first")),
        Arc::new(Store::open(dir.path()).expect("open second")),
    ];
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|j| {
            let steps: Vec<String> = (0..STEPS).map(|s| format!("step{s}")).collect();
            NewJob {
                id: format!("job{j}"),
                needs: Vec::new(),
                steps,
            }
        })
        .collect();
    let runs: Vec<i64> = stores
        .iter()
        .map(|store| {
            store
                .begin_run(&NewRun {
                    pipeline: "load".into(),
                    file: "airlock.yml".into(),
                    jobs: jobs.clone(),
                    degraded: Vec::new(),
                })
                .expect("begin")
        })
        .collect();
    let barrier = Arc::new(Barrier::new(2 * JOBS + 2));
    let mut threads = Vec::new();
    for (store, &id) in stores.iter().zip(&runs) {
        for j in 0..JOBS {
            let store = Arc::clone(store);
            let barrier = Arc::clone(&barrier);
            threads.push(thread::spawn(move || -> Result<(), StateError> {
                let job = format!("job{j}");
                barrier.wait();
                store.job_started(id, &job)?;
                for s in 0..STEPS {
                    store.step_started(id, &job, s)?;
                    let code = i32::try_from(s).expect("small");
                    store.step_finished(id, &job, s, Status::Success, Some(code))?;
                }
                store.job_finished(
                    id,
                    &job,
                    &JobEnd {
                        artifacts: vec![job.clone()],
                        ..end(Status::Success, Some(0))
                    },
                )
            }));
        }
        // A reader per store, and another run being begun, meanwhile.
        let store = Arc::clone(store);
        let barrier = Arc::clone(&barrier);
        threads.push(thread::spawn(move || -> Result<(), StateError> {
            barrier.wait();
            for _ in 0..20 {
                store.list_runs(10)?;
                store.get_run(id)?;
                store.recover_lost_runs()?;
            }
            let extra = store.begin_run(&NewRun {
                pipeline: "extra".into(),
                file: "airlock.yml".into(),
                jobs: vec![],
                degraded: Vec::new(),
            })?;
            store.run_finished(extra, Status::Success, 0)
        }));
    }
    for thread in threads {
        thread
            .join()
            .expect("thread panicked")
            .expect("no database-is-locked or other error");
    }
    for (store, id) in stores.iter().zip(runs) {
        store.run_finished(id, Status::Success, 0).expect("run end");
        let record = store.get_run(id).expect("get").expect("exists");
        assert_eq!(record.summary.jobs_succeeded, JOBS);
        for job in &record.jobs {
            assert_eq!(job.status, Status::Success);
            assert_eq!(job.artifacts, vec![job.id.clone()]);
            assert_eq!(job.steps.len(), STEPS);
            for step in &job.steps {
                assert_eq!(step.status, Status::Success);
                assert_eq!(step.exit_code, i32::try_from(step.index).ok());
            }
        }
    }
    assert_eq!(stores[0].list_runs(100).expect("list").len(), 4);
}

/// Environment variable naming the home a child test process writes to.
const CHILD_HOME: &str = "AIRLOCK_STATE_TEST_CHILD_HOME";
/// Set in the child that should die without finishing its run.
const CHILD_ABANDON: &str = "AIRLOCK_STATE_TEST_CHILD_ABANDON";

/// Not a test of its own: the body of the child processes of
/// `concurrent_processes_share_a_home`; does nothing unless `CHILD_HOME` is set.
#[test]
fn child_process_writer() {
    let Some(home) = std::env::var_os(CHILD_HOME) else {
        return;
    };
    let store = Store::open(Path::new(&home)).expect("child open");
    let jobs = (0..4)
        .map(|j| job(&format!("job{j}"), &[], &["a", "b", "c", "d", "e"]))
        .collect();
    let id = store.begin_run(&run("child", jobs)).expect("child begin");
    if std::env::var_os(CHILD_ABANDON).is_some() {
        store.job_started(id, "job0").expect("child start");
        return; // "crash": exit with the run still Running.
    }
    thread::scope(|scope| {
        for j in 0..4 {
            let store = &store;
            scope.spawn(move || {
                let job = format!("job{j}");
                store.job_started(id, &job).expect("child job start");
                for s in 0..5 {
                    store.step_started(id, &job, s).expect("child step start");
                    store
                        .step_finished(id, &job, s, Status::Success, Some(0))
                        .expect("child step end");
                }
                store
                    .job_finished(id, &job, &end(Status::Success, Some(0)))
                    .expect("child job end");
            });
        }
    });
    store
        .run_finished(id, Status::Success, 0)
        .expect("child run end");
}

#[test]
fn concurrent_processes_share_a_home() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..4)
        .map(|n| {
            let mut cmd = Command::new(&exe);
            cmd.args(["--exact", "child_process_writer", "--test-threads=1"])
                .env(CHILD_HOME, dir.path());
            if n == 3 {
                cmd.env(CHILD_ABANDON, "1");
            }
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait child");
        assert!(
            out.status.success(),
            "child failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let store = Store::open(dir.path()).expect("open");
    let runs = store.list_runs(10).expect("list");
    assert_eq!(runs.len(), 4);
    let abandoned: Vec<_> = runs
        .iter()
        .filter(|r| r.status == Status::Running)
        .map(|r| r.id)
        .collect();
    assert_eq!(abandoned.len(), 1, "{runs:?}");
    assert_eq!(
        runs.iter().filter(|r| r.status == Status::Success).count(),
        3
    );
    assert!(runs
        .iter()
        .filter(|r| r.status == Status::Success)
        .all(|r| r.jobs_succeeded == 4));
    // The abandoned child's pid is dead: its run is lost.
    assert_eq!(store.recover_lost_runs().expect("recover"), abandoned);
    let lost = store.get_run(abandoned[0]).expect("get").expect("exists");
    assert_eq!(lost.summary.status, Status::Lost);
    assert!(lost.jobs.iter().all(|j| j.status == Status::Lost));
}

#[test]
fn opening_twice_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Store::open(dir.path()).expect("open");
    let id = first
        .begin_run(&run("demo", vec![job("a", &[], &["one"])]))
        .expect("begin");
    drop(first);
    let second = Store::open(dir.path()).expect("reopen");
    let third = Store::open(dir.path()).expect("open while another is open");
    assert_eq!(second.latest_run().expect("latest"), Some(id));
    assert_eq!(third.get_run(id).expect("get").expect("kept").jobs.len(), 1);
    let version: i64 = raw(&second)
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("version");
    assert_eq!(version, 6);
}

#[test]
fn future_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let conn = raw(&store);
    drop(store);
    conn.execute_batch("PRAGMA user_version = 99")
        .expect("bump");
    drop(conn);
    let err = Store::open(dir.path()).expect_err("newer schema must be refused");
    assert!(
        matches!(
            err,
            StateError::FutureSchema {
                found: 99,
                supported: 6,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("state.db")
            && message.contains("schema version 99")
            && message.contains("newer airlock"),
        "{message}"
    );
    // Refusing did not touch it.
    let conn = rusqlite::Connection::open(dir.path().join("state.db")).expect("raw");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("version");
    assert_eq!(version, 99);
}

#[test]
fn file_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("deep/er/home");
    let store = Store::open(&home).expect("open");
    assert_eq!(store.home(), home);
    assert_eq!(mode(&home), 0o700, "home");
    assert_eq!(mode(&home.join("runs")), 0o700, "runs");
    assert_eq!(mode(&home.join("state.db")), 0o600, "state.db");
    assert_eq!(mode(&home.join("state.db-wal")), 0o600, "state.db-wal");
    let id = store.begin_run(&run("demo", vec![])).expect("begin");
    assert_eq!(store.run_dir(id), home.join("runs").join("1"));
    assert_eq!(mode(&store.run_dir(id)), 0o700, "runs/<id>");

    // An existing home keeps the mode its owner gave it.
    let existing = dir.path().join("existing");
    fs::create_dir(&existing).expect("mkdir");
    fs::set_permissions(&existing, fs::Permissions::from_mode(0o750)).expect("chmod");
    Store::open(&existing).expect("open existing");
    assert_eq!(mode(&existing), 0o750);
}

#[test]
fn home_that_is_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("file");
    fs::write(&file, "").expect("write");
    let err = Store::open(&file).expect_err("not a directory");
    assert!(matches!(err, StateError::CreateDir { .. }), "{err}");
    assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
}

/// Migration 1 exactly as it shipped: the schema of version-1 databases.
const SCHEMA_V1: &str = r"
    CREATE TABLE runs (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        pipeline          TEXT    NOT NULL,
        file              ANY     NOT NULL,
        status            TEXT    NOT NULL CHECK (status IN
                              ('pending','running','success','failed','timeout','skipped','lost','cancelled')),
        exit_code         INTEGER,
        started_at        INTEGER NOT NULL,
        finished_at       INTEGER,
        runner_pid        INTEGER NOT NULL,
        runner_start_time INTEGER,
        runner_boot_id    TEXT
    ) STRICT;

    CREATE INDEX runs_running ON runs (id) WHERE status = 'running';

    CREATE TABLE jobs (
        id          INTEGER PRIMARY KEY,
        run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        position    INTEGER NOT NULL,
        name        TEXT    NOT NULL,
        needs       TEXT    NOT NULL,
        status      TEXT    NOT NULL CHECK (status IN
                        ('pending','running','success','failed','timeout','skipped','lost','cancelled')),
        exit_code   INTEGER,
        reason      TEXT,
        started_at  INTEGER,
        finished_at INTEGER,
        log_path    ANY,
        artifacts   TEXT    NOT NULL,
        UNIQUE (run_id, name)
    ) STRICT;

    CREATE TABLE steps (
        job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        idx         INTEGER NOT NULL,
        name        TEXT    NOT NULL,
        status      TEXT    NOT NULL CHECK (status IN
                        ('pending','running','success','failed','timeout','skipped','lost','cancelled')),
        exit_code   INTEGER,
        started_at  INTEGER,
        finished_at INTEGER,
        PRIMARY KEY (job_id, idx)
    ) STRICT, WITHOUT ROWID;
    ";

#[test]
fn version_1_database_is_migrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    fs::create_dir(&home).expect("mkdir home");
    let old = rusqlite::Connection::open(home.join("state.db")).expect("create v1");
    old.execute_batch(SCHEMA_V1).expect("schema v1");
    old.execute_batch(
        "INSERT INTO runs (pipeline, file, status, exit_code, started_at, finished_at, runner_pid)
         VALUES ('old', '/src/old/airlock.yml', 'success', 0, 1700000000000, 1700000001500, 1);
         INSERT INTO jobs (run_id, position, name, needs, status, exit_code, artifacts)
         VALUES (1, 0, 'a', '[]', 'success', 0, '[\"out.txt\"]');
         INSERT INTO steps (job_id, idx, name, status, exit_code) VALUES (1, 0, 'one', 'success', 0);
         PRAGMA application_id = 0x4149524C;
         PRAGMA user_version = 1;",
    )
    .expect("v1 data");
    drop(old);

    let store = Store::open(&home).expect("open a version-1 database");
    let version: i64 = raw(&store)
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("version");
    assert_eq!(version, 6);

    let listed = store.list_runs(10).expect("list");
    assert_eq!(listed.len(), 1);
    let summary = &listed[0];
    assert_eq!((summary.id, summary.pipeline.as_str()), (1, "old"));
    assert_eq!(summary.status, Status::Success);
    assert_eq!(summary.duration_ms, Some(1_500));
    assert_eq!((summary.jobs_total, summary.jobs_succeeded), (1, 1));
    assert_eq!(summary.degraded, Vec::<String>::new());
    let record = store.get_run(1).expect("get").expect("old run kept");
    assert_eq!(&record.summary, summary);
    assert_eq!(record.jobs[0].artifacts, ["out.txt"]);
    assert_eq!(record.jobs[0].steps[0].name, "one");
    assert_eq!(record.jobs[0].output_cut, None, "no limit was recorded");
    let json = serde_json::to_value(&record).expect("serialize");
    assert_eq!(json["degraded"], serde_json::json!([]));

    // The migrated database records new runs, degraded layers included.
    let degraded = vec!["cgroups: allowed by --allow-degraded cgroups".to_owned()];
    let id = store
        .begin_run(&NewRun {
            degraded: degraded.clone(),
            ..run("new", vec![job("a", &[], &["one"])])
        })
        .expect("begin after migration");
    assert_eq!(id, 2);
    let degraded_by_run: Vec<_> = store
        .list_runs(10)
        .expect("list")
        .into_iter()
        .map(|r| (r.id, r.degraded))
        .collect();
    assert_eq!(degraded_by_run, [(2, degraded), (1, Vec::new())]);

    // Reopening a migrated database changes nothing.
    drop(store);
    let store = Store::open(&home).expect("reopen");
    assert_eq!(store.list_runs(10).expect("list").len(), 2);
}
