//! What the monitor records: alerts, incidents, the processes a job ran,
//! the files it left, and the per-job baselines that later runs are
//! compared with.

use std::collections::BTreeSet;

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::error::StateError;
use crate::model::RunId;
use crate::store::Store;
use crate::time::Timestamp;

/// An alert a detection rule raised for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// When it was raised.
    pub at: Timestamp,
    /// The rule's id.
    pub rule: String,
    /// `info`, `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// `alert`, or `kill` (the rule contained the job).
    pub action: String,
    /// What the rule catches.
    pub description: String,
    /// The observation that matched, in one line (redacted).
    pub summary: String,
    /// The observation's fields as a JSON object (redacted).
    pub observation: String,
}

/// One process of a job: as the monitor saw it exec, or as a containment
/// found it frozen. Arguments are redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    /// When it was seen.
    pub at: Timestamp,
    /// Its pid inside the job.
    pub pid: i64,
    /// Its parent's pid inside the job (0 if unknown).
    pub ppid: i64,
    /// Its user id inside the job.
    pub uid: i64,
    /// The executable's path inside the job.
    pub path: String,
    /// Its arguments, joined by spaces.
    pub argv: String,
    /// Whether `argv` is what the program was started with, read at the
    /// exec itself; if not, it was read from `/proc` afterwards and may be
    /// what the program wrote over its arguments (see docs/SECURITY.md).
    pub argv_at_exec: bool,
}

/// A containment: a rule's `kill` action froze the job, recorded its
/// process tree and killed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incident {
    /// When the job was frozen.
    pub at: Timestamp,
    /// The rule that acted.
    pub rule: String,
    /// What it matched (redacted).
    pub summary: String,
    /// Every process of the job at the time, frozen.
    pub processes: Vec<Process>,
    /// From the triggering observation to the job being killed.
    pub took_ms: u64,
}

/// A file a job created or changed in its workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Its path inside the job.
    pub path: String,
    /// `created` or `modified`.
    pub change: String,
    /// Its size in bytes.
    pub size: u64,
    /// It has an execute bit.
    pub executable: bool,
}

/// What earlier successful runs of one job used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Baseline {
    /// Pipeline name.
    pub pipeline: String,
    /// Job id.
    pub job: String,
    /// Successful runs learned from.
    pub runs: u32,
    /// Endpoints (`host:port`) the job's egress proxy allowed.
    pub endpoints: BTreeSet<String>,
    /// Executable paths the job ran.
    pub binaries: BTreeSet<String>,
}

/// A [`Process`] inside an incident's JSON column (time in unix millis).
#[derive(Serialize, Deserialize)]
struct StoredProcess {
    at_ms: i64,
    pid: i64,
    ppid: i64,
    uid: i64,
    path: String,
    argv: String,
    #[serde(default)]
    argv_at_exec: bool,
}

impl From<&Process> for StoredProcess {
    fn from(p: &Process) -> StoredProcess {
        StoredProcess {
            at_ms: p.at.as_unix_millis(),
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            path: p.path.clone(),
            argv: p.argv.clone(),
            argv_at_exec: p.argv_at_exec,
        }
    }
}

impl From<StoredProcess> for Process {
    fn from(p: StoredProcess) -> Process {
        Process {
            at: Timestamp::from_unix_millis(p.at_ms),
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            path: p.path,
            argv: p.argv,
            argv_at_exec: p.argv_at_exec,
        }
    }
}

/// Endpoints, and binaries, one baseline holds at most (see
/// [`Store::learn_baseline`]).
pub const MAX_BASELINE_VALUES: i64 = 10_000;

impl Store {
    /// Records an alert of `job`.
    pub fn alert(&self, run: RunId, job: &str, alert: &Alert) -> Result<(), StateError> {
        let conn = self.lock();
        let changed = conn
            .execute(
                "INSERT INTO alerts (job_id, at, rule, severity, action, description, summary,
                                     observation)
                 SELECT id, ?3, ?4, ?5, ?6, ?7, ?8, ?9 FROM jobs WHERE run_id = ?1 AND name = ?2",
                params![
                    run,
                    job,
                    alert.at,
                    alert.rule,
                    alert.severity,
                    alert.action,
                    alert.description,
                    alert.summary,
                    alert.observation
                ],
            )
            .map_err(self.run_sql(run, "record an alert"))?;
        if changed == 0 {
            return Err(self.missing_job(&conn, run, job));
        }
        Ok(())
    }

    /// Records a containment of `job`.
    pub fn incident(&self, run: RunId, job: &str, incident: &Incident) -> Result<(), StateError> {
        let conn = self.lock();
        let stored: Vec<StoredProcess> =
            incident.processes.iter().map(StoredProcess::from).collect();
        let processes = serde_json::to_string(&stored).map_err(|e| StateError::Encode {
            what: "an incident's processes",
            why: e.to_string(),
        })?;
        let changed = conn
            .execute(
                "INSERT INTO incidents (job_id, at, rule, summary, processes, took_ms)
                 SELECT id, ?3, ?4, ?5, ?6, ?7 FROM jobs WHERE run_id = ?1 AND name = ?2",
                params![
                    run,
                    job,
                    incident.at,
                    incident.rule,
                    incident.summary,
                    processes,
                    i64::try_from(incident.took_ms).unwrap_or(i64::MAX)
                ],
            )
            .map_err(self.run_sql(run, "record an incident"))?;
        if changed == 0 {
            return Err(self.missing_job(&conn, run, job));
        }
        Ok(())
    }

    /// Records what `job` executed and left behind, in one transaction:
    /// `processes` (the first ones, if the engine capped them) out of
    /// `execs` seen in all, `lost` exec events the kernel dropped, and the
    /// files of its workspace.
    pub fn job_activity(
        &self,
        run: RunId,
        job: &str,
        (execs, lost): (u64, u64),
        processes: &[Process],
        files: &[FileChange],
    ) -> Result<(), StateError> {
        let mut conn = self.lock();
        let err = || self.run_sql(run, "record a job's processes and files");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err())?;
        let job_row = self.job_row(&tx, run, job, "record a job's processes and files")?;
        tx.execute(
            "UPDATE jobs SET execs = ?2, execs_lost = ?3 WHERE id = ?1",
            params![
                job_row,
                i64::try_from(execs).unwrap_or(i64::MAX),
                i64::try_from(lost).unwrap_or(i64::MAX)
            ],
        )
        .map_err(err())?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO processes (job_id, at, pid, ppid, uid, path, argv, argv_at_exec)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(err())?;
            for p in processes {
                insert
                    .execute(params![
                        job_row,
                        p.at,
                        p.pid,
                        p.ppid,
                        p.uid,
                        p.path,
                        p.argv,
                        p.argv_at_exec
                    ])
                    .map_err(err())?;
            }
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO files (job_id, path, change, size, executable)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err())?;
            for f in files {
                insert
                    .execute(params![
                        job_row,
                        f.path,
                        f.change,
                        i64::try_from(f.size).unwrap_or(i64::MAX),
                        f.executable
                    ])
                    .map_err(err())?;
            }
        }
        tx.commit().map_err(err())
    }

    /// The baseline of `pipeline`/`job` (empty, with `runs` 0, if none).
    pub fn baseline(&self, pipeline: &str, job: &str) -> Result<Baseline, StateError> {
        let conn = self.lock();
        let err = || self.sql("read a baseline");
        let runs: Option<i64> = conn
            .query_row(
                "SELECT runs FROM baseline_runs WHERE pipeline = ?1 AND job = ?2",
                params![pipeline, job],
                |row| row.get(0),
            )
            .optional()
            .map_err(err())?;
        let mut baseline = Baseline {
            pipeline: pipeline.into(),
            job: job.into(),
            runs: runs.and_then(|r| u32::try_from(r).ok()).unwrap_or(0),
            ..Baseline::default()
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT kind, value FROM baselines WHERE pipeline = ?1 AND job = ?2
                 ORDER BY kind, value",
            )
            .map_err(err())?;
        let rows = stmt
            .query_map(params![pipeline, job], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(err())?;
        for row in rows {
            let (kind, value) = row.map_err(err())?;
            if kind == "endpoint" {
                baseline.endpoints.insert(value);
            } else {
                baseline.binaries.insert(value);
            }
        }
        Ok(baseline)
    }

    /// Adds one successful run of `pipeline`/`job` that used `endpoints`
    /// and ran `binaries` to its baseline, in one transaction. A baseline
    /// holds at most [`MAX_BASELINE_VALUES`] endpoints and as many
    /// binaries: past that, values already in it are kept current and new
    /// ones are not added (they stay new for the rules).
    pub fn learn_baseline(
        &self,
        pipeline: &str,
        job: &str,
        endpoints: &BTreeSet<String>,
        binaries: &BTreeSet<String>,
    ) -> Result<(), StateError> {
        let mut conn = self.lock();
        let err = || self.sql("update a baseline");
        let now = Timestamp::now();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err())?;
        tx.execute(
            "INSERT INTO baseline_runs (pipeline, job, runs, updated_at) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (pipeline, job) DO UPDATE SET runs = runs + 1, updated_at = ?3",
            params![pipeline, job, now],
        )
        .map_err(err())?;
        {
            let mut seen = tx
                .prepare_cached(
                    "UPDATE baselines SET last_seen = ?5
                     WHERE pipeline = ?1 AND job = ?2 AND kind = ?3 AND value = ?4",
                )
                .map_err(err())?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO baselines (pipeline, job, kind, value, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                )
                .map_err(err())?;
            let mut count = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM baselines WHERE pipeline = ?1 AND job = ?2 AND kind = ?3",
                )
                .map_err(err())?;
            for (kind, values) in [("endpoint", endpoints), ("binary", binaries)] {
                let mut held: i64 = count
                    .query_row(params![pipeline, job, kind], |row| row.get(0))
                    .map_err(err())?;
                for value in values {
                    let updated = seen
                        .execute(params![pipeline, job, kind, value, now])
                        .map_err(err())?;
                    if updated == 0 && held < MAX_BASELINE_VALUES {
                        insert
                            .execute(params![pipeline, job, kind, value, now])
                            .map_err(err())?;
                        held += 1;
                    }
                }
            }
        }
        tx.commit().map_err(err())
    }

    /// Every baseline whose pipeline is `pipeline` (all when `None`) and
    /// job is `job` (all when `None`), by pipeline and job.
    pub fn baselines(
        &self,
        pipeline: Option<&str>,
        job: Option<&str>,
    ) -> Result<Vec<Baseline>, StateError> {
        let keys: Vec<(String, String)> = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT pipeline, job FROM baseline_runs
                     WHERE (?1 IS NULL OR pipeline = ?1) AND (?2 IS NULL OR job = ?2)
                     ORDER BY pipeline, job",
                )
                .map_err(self.sql("list baselines"))?;
            let rows = stmt
                .query_map(params![pipeline, job], |row: &Row<'_>| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .and_then(Iterator::collect);
            rows.map_err(self.sql("list baselines"))?
        };
        keys.iter()
            .map(|(pipeline, job)| self.baseline(pipeline, job))
            .collect()
    }

    /// Forgets the baselines of `pipeline` (every job when `job` is
    /// `None`); returns how many jobs' baselines were removed.
    pub fn reset_baseline(&self, pipeline: &str, job: Option<&str>) -> Result<usize, StateError> {
        let mut conn = self.lock();
        let err = || self.sql("reset a baseline");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err())?;
        tx.execute(
            "DELETE FROM baselines WHERE pipeline = ?1 AND (?2 IS NULL OR job = ?2)",
            params![pipeline, job],
        )
        .map_err(err())?;
        let removed = tx
            .execute(
                "DELETE FROM baseline_runs WHERE pipeline = ?1 AND (?2 IS NULL OR job = ?2)",
                params![pipeline, job],
            )
            .map_err(err())?;
        tx.commit().map_err(err())?;
        Ok(removed)
    }
}

pub(crate) fn alert_from_row(row: &Row<'_>) -> rusqlite::Result<Alert> {
    Ok(Alert {
        at: row.get(0)?,
        rule: row.get(1)?,
        severity: row.get(2)?,
        action: row.get(3)?,
        description: row.get(4)?,
        summary: row.get(5)?,
        observation: row.get(6)?,
    })
}

pub(crate) fn incident_from_row(row: &Row<'_>) -> rusqlite::Result<Incident> {
    let processes: String = row.get(3)?;
    let stored: Vec<StoredProcess> = serde_json::from_str(&processes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let processes = stored.into_iter().map(Process::from).collect();
    Ok(Incident {
        at: row.get(0)?,
        rule: row.get(1)?,
        summary: row.get(2)?,
        processes,
        took_ms: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
    })
}

pub(crate) fn process_from_row(row: &Row<'_>) -> rusqlite::Result<Process> {
    Ok(Process {
        at: row.get(0)?,
        pid: row.get(1)?,
        ppid: row.get(2)?,
        uid: row.get(3)?,
        path: row.get(4)?,
        argv: row.get(5)?,
        argv_at_exec: row.get(6)?,
    })
}

pub(crate) fn file_from_row(row: &Row<'_>) -> rusqlite::Result<FileChange> {
    Ok(FileChange {
        path: row.get(0)?,
        change: row.get(1)?,
        size: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
        executable: row.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn alerts_incidents_processes_and_files_read_back_with_the_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let run = store
            .begin_run(&crate::NewRun {
                pipeline: "p".into(),
                file: "p.yml".into(),
                degraded: Vec::new(),
                jobs: vec![crate::NewJob {
                    id: "build".into(),
                    needs: Vec::new(),
                    steps: vec!["s".into()],
                }],
            })
            .expect("begin");
        let at = Timestamp::from_unix_millis(1_700_000_000_000);
        let alert = Alert {
            at,
            rule: "netcat".into(),
            severity: "high".into(),
            action: "kill".into(),
            description: "d".into(),
            summary: "path=/usr/bin/nc".into(),
            observation: "{}".into(),
        };
        store.alert(run, "build", &alert).expect("alert");
        let process = Process {
            at,
            pid: 3,
            ppid: 1,
            uid: 0,
            path: "/usr/bin/nc".into(),
            argv: "nc -l 4444".into(),
            // Not the default: the round trip must carry it.
            argv_at_exec: true,
        };
        let incident = Incident {
            at,
            rule: "netcat".into(),
            summary: "s".into(),
            processes: vec![process.clone()],
            took_ms: 12,
        };
        store.incident(run, "build", &incident).expect("incident");
        let file = FileChange {
            path: "/workspace/out".into(),
            change: "created".into(),
            size: 5,
            executable: true,
        };
        store
            .job_activity(
                run,
                "build",
                (9, 2),
                std::slice::from_ref(&process),
                std::slice::from_ref(&file),
            )
            .expect("activity");
        assert!(store.alert(run, "nope", &alert).is_err());

        let job = store
            .get_run(run)
            .expect("read")
            .expect("exists")
            .jobs
            .remove(0);
        assert_eq!(job.alerts, vec![alert]);
        assert_eq!(job.incidents, vec![incident]);
        assert_eq!((job.execs, job.execs_lost), (9, 2));
        assert_eq!(job.processes, vec![process]);
        assert_eq!(job.files, vec![file]);
    }

    #[test]
    fn baselines_grow_with_runs_and_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let empty = store.baseline("p", "build").expect("read");
        assert_eq!((empty.runs, empty.endpoints.len()), (0, 0));

        store
            .learn_baseline("p", "build", &set(&["a.test:443"]), &set(&["/bin/sh"]))
            .expect("learn");
        store
            .learn_baseline("p", "build", &set(&["b.test:443"]), &set(&["/bin/sh"]))
            .expect("learn");
        store
            .learn_baseline("p", "test", &set(&[]), &set(&["/bin/true"]))
            .expect("learn");
        let b = store.baseline("p", "build").expect("read");
        assert_eq!(b.runs, 2);
        assert_eq!(b.endpoints, set(&["a.test:443", "b.test:443"]));
        assert_eq!(b.binaries, set(&["/bin/sh"]));
        assert_eq!(store.baselines(Some("p"), None).expect("list").len(), 2);
        assert_eq!(store.baselines(None, Some("test")).expect("list").len(), 1);

        assert_eq!(store.reset_baseline("p", Some("build")).expect("reset"), 1);
        assert_eq!(store.baseline("p", "build").expect("read").runs, 0);
        assert!(store
            .baseline("p", "build")
            .expect("read")
            .binaries
            .is_empty());
        assert_eq!(store.baseline("p", "test").expect("read").runs, 1);
        assert_eq!(store.reset_baseline("p", None).expect("reset"), 1);
        assert!(store.baselines(None, None).expect("list").is_empty());
    }

    #[test]
    fn a_baseline_stops_growing_at_its_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let cap = usize::try_from(MAX_BASELINE_VALUES).expect("fits");
        let many: BTreeSet<String> = (0..cap + 5).map(|i| format!("/w/t{i:05}")).collect();
        store
            .learn_baseline("p", "j", &set(&[]), &many)
            .expect("learn");
        let b = store.baseline("p", "j").expect("read");
        assert_eq!(b.binaries.len(), cap);
        // A value it holds is still kept current; a new one is not added.
        store
            .learn_baseline("p", "j", &set(&[]), &set(&["/w/t00000", "/bin/new"]))
            .expect("learn");
        let b = store.baseline("p", "j").expect("read");
        assert_eq!((b.runs, b.binaries.len()), (2, cap));
        assert!(b.binaries.contains("/w/t00000") && !b.binaries.contains("/bin/new"));
    }
}
