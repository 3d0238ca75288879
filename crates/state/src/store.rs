//! The [`Store`]: recording runs as they happen and reading them back.
//!
//! Every change that touches more than one row is one `IMMEDIATE`
//! transaction: it takes SQLite's write lock up front (waiting up to the busy
//! timeout for other writers) instead of upgrading a read lock later, which
//! in WAL mode fails at once with "database is locked" when another
//! connection wrote in between. Single-row changes are one autocommit
//! `UPDATE`, which takes the write lock when the statement starts and so
//! waits the busy timeout too.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};

use crate::error::StateError;
use crate::fs;
use crate::model::{
    duration, Egress, JobEnd, JobRecord, NewRun, OutputCut, RunId, RunRecord, RunSummary, Status,
    StepRecord,
};
use crate::process::{self, Liveness, RunnerIdentity};
use crate::schema;
use crate::time::Timestamp;

/// The database file inside the home.
const DB_FILE: &str = "state.db";
/// The directory of per-run directories inside the home.
const RUNS_DIR: &str = "runs";

/// The run record of one state home.
///
/// One SQLite connection behind a mutex: share a `Store` between the
/// threads of a runner (it is `Send + Sync`). Several processes may open the
/// same home at once.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    home: PathBuf,
    db_path: PathBuf,
}

impl Store {
    /// Opens the state home `home`, creating it (mode 0700) and its
    /// `runs/` directory if missing, and opens `home/state.db` (created with
    /// mode 0600), bringing its schema up to date.
    ///
    /// Refuses a database written by a newer Airlock, or an SQLite file that
    /// is not Airlock's.
    pub fn open(home: &Path) -> Result<Store, StateError> {
        fs::create_private_dir_all(home)?;
        fs::create_private_dir_all(&home.join(RUNS_DIR))?;
        let db_path = home.join(DB_FILE);
        fs::create_private_file(&db_path)?;
        let conn = schema::open(&db_path)?;
        Ok(Store {
            conn: Mutex::new(conn),
            home: home.to_owned(),
            db_path,
        })
    }

    /// The state home this store was opened on.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The database file, `home/state.db`.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The directory of run `id`'s files: `home/runs/<id>`.
    pub fn run_dir(&self, id: RunId) -> PathBuf {
        self.home.join(RUNS_DIR).join(id.to_string())
    }

    /// Records a new run as `Running`, with this process as its runner, and
    /// its jobs and steps as `Pending`, all in one transaction; creates its
    /// run directory (mode 0700). Returns the new run's id.
    ///
    /// On any error nothing is recorded and no directory is left behind.
    pub fn begin_run(&self, run: &NewRun) -> Result<RunId, StateError> {
        let runner = RunnerIdentity::current();
        let now = Timestamp::now();
        let start_time = runner.start_time.and_then(|t| i64::try_from(t).ok());
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin a transaction"))?;
        tx.execute(
            "INSERT INTO runs (pipeline, file, status, started_at, runner_pid, runner_start_time, runner_boot_id,
                               degraded)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                run.pipeline,
                SqlPath(&run.file),
                Status::Running,
                now,
                runner.pid,
                start_time,
                runner.boot_id,
                JsonList(&run.degraded)
            ],
        )
        .map_err(self.sql("record run"))?;
        let id = tx.last_insert_rowid();
        {
            let mut insert_job = tx
                .prepare(
                    "INSERT INTO jobs (run_id, position, name, needs, status, artifacts)
                     VALUES (?1, ?2, ?3, ?4, ?5, '[]')",
                )
                .map_err(self.run_sql(id, "record jobs"))?;
            let mut insert_step = tx
                .prepare("INSERT INTO steps (job_id, idx, name, status) VALUES (?1, ?2, ?3, ?4)")
                .map_err(self.run_sql(id, "record steps"))?;
            for (position, job) in run.jobs.iter().enumerate() {
                insert_job
                    .execute(params![
                        id,
                        SqlIndex(position),
                        job.id,
                        JsonList(&job.needs),
                        Status::Pending
                    ])
                    .map_err(|e| match e.sqlite_error_code() {
                        Some(ErrorCode::ConstraintViolation) => StateError::DuplicateJob {
                            job: job.id.clone(),
                        },
                        _ => self.run_sql(id, "record jobs")(e),
                    })?;
                let job_row = tx.last_insert_rowid();
                for (index, name) in job.steps.iter().enumerate() {
                    insert_step
                        .execute(params![job_row, SqlIndex(index), name, Status::Pending])
                        .map_err(self.run_sql(id, "record steps"))?;
                }
            }
        }
        let dir = self.run_dir(id);
        fs::create_run_dir(&dir)?;
        if let Err(e) = tx.commit() {
            // Best effort: the directory is empty and belongs to no run.
            let _ = std::fs::remove_dir(&dir);
            return Err(self.run_sql(id, "commit run")(e));
        }
        Ok(id)
    }

    /// Records that `job` of `run` started now: status `Running`.
    pub fn job_started(&self, run: RunId, job: &str) -> Result<(), StateError> {
        let conn = self.lock();
        let changed = conn
            .execute(
                "UPDATE jobs SET status = ?3, started_at = ?4 WHERE run_id = ?1 AND name = ?2",
                params![run, job, Status::Running, Timestamp::now()],
            )
            .map_err(self.run_sql(run, "record job start"))?;
        if changed == 0 {
            return Err(self.missing_job(&conn, run, job));
        }
        Ok(())
    }

    /// Records that step `index` (zero-based) of `job` started now: status
    /// `Running`.
    pub fn step_started(&self, run: RunId, job: &str, index: usize) -> Result<(), StateError> {
        let conn = self.lock();
        let changed = conn
            .execute(
                "UPDATE steps SET status = ?4, started_at = ?5
                 WHERE job_id = (SELECT id FROM jobs WHERE run_id = ?1 AND name = ?2) AND idx = ?3",
                params![run, job, SqlIndex(index), Status::Running, Timestamp::now()],
            )
            .map_err(self.run_sql(run, "record step start"))?;
        if changed == 0 {
            return Err(self.missing_step(&conn, run, job, index));
        }
        Ok(())
    }

    /// Records that step `index` of `job` finished now with `status` (which
    /// must be [terminal](Status::is_terminal)) and `exit_code`.
    pub fn step_finished(
        &self,
        run: RunId,
        job: &str,
        index: usize,
        status: Status,
        exit_code: Option<i32>,
    ) -> Result<(), StateError> {
        if !status.is_terminal() {
            return Err(StateError::NotTerminal { run, status });
        }
        let conn = self.lock();
        let changed = conn
            .execute(
                "UPDATE steps SET status = ?4, exit_code = ?5, finished_at = ?6
                 WHERE job_id = (SELECT id FROM jobs WHERE run_id = ?1 AND name = ?2) AND idx = ?3",
                params![
                    run,
                    job,
                    SqlIndex(index),
                    status,
                    exit_code,
                    Timestamp::now()
                ],
            )
            .map_err(self.run_sql(run, "record step end"))?;
        if changed == 0 {
            return Err(self.missing_step(&conn, run, job, index));
        }
        Ok(())
    }

    /// Records how `job` ended, in one transaction with its steps: steps
    /// still `Pending` become `Skipped`; steps still `Running` take the job's
    /// status and finish now. `end.status` must be
    /// [terminal](Status::is_terminal).
    pub fn job_finished(&self, run: RunId, job: &str, end: &JobEnd) -> Result<(), StateError> {
        if !end.status.is_terminal() {
            return Err(StateError::NotTerminal {
                run,
                status: end.status,
            });
        }
        let now = Timestamp::now();
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.run_sql(run, "begin a transaction"))?;
        let err = || self.run_sql(run, "record job end");
        let job_row = self.job_row(&tx, run, job, "record job end")?;
        tx.execute(
            "UPDATE jobs SET status = ?2, exit_code = ?3, reason = ?4, finished_at = ?5,
                             log_path = ?6, artifacts = ?7
             WHERE id = ?1",
            params![
                job_row,
                end.status,
                end.exit_code,
                end.reason,
                now,
                end.log_path.as_deref().map(SqlPath),
                JsonList(&end.artifacts)
            ],
        )
        .map_err(err())?;
        finish_leftover_steps(&tx, "job_id = ?1", job_row, end.status, now).map_err(err())?;
        tx.commit().map_err(err())
    }

    /// Records that `run` finished now with `status` (which must be
    /// [terminal](Status::is_terminal)) and the exit code `airlock run`
    /// returns, in one transaction that also closes anything left open:
    /// `Pending` jobs and steps become `Skipped`; `Running` ones become
    /// `Cancelled` if the run was cancelled and `Lost` otherwise (the runner
    /// no longer knows how they ended).
    pub fn run_finished(
        &self,
        run: RunId,
        status: Status,
        exit_code: i32,
    ) -> Result<(), StateError> {
        if !status.is_terminal() {
            return Err(StateError::NotTerminal { run, status });
        }
        let now = Timestamp::now();
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.run_sql(run, "begin a transaction"))?;
        let err = || self.run_sql(run, "record run end");
        let changed = tx
            .execute(
                "UPDATE runs SET status = ?2, exit_code = ?3, finished_at = ?4 WHERE id = ?1",
                params![run, status, exit_code, now],
            )
            .map_err(err())?;
        if changed == 0 {
            return Err(StateError::UnknownRun { run });
        }
        let leftover = if status == Status::Cancelled {
            Status::Cancelled
        } else {
            Status::Lost
        };
        finish_leftover_steps(
            &tx,
            "job_id IN (SELECT id FROM jobs WHERE run_id = ?1)",
            run,
            leftover,
            now,
        )
        .map_err(err())?;
        tx.execute(
            "UPDATE jobs SET status = ?2 WHERE run_id = ?1 AND status = ?3",
            params![run, Status::Skipped, Status::Pending],
        )
        .map_err(err())?;
        tx.execute(
            "UPDATE jobs SET status = ?2, finished_at = ?3 WHERE run_id = ?1 AND status = ?4",
            params![run, leftover, now, Status::Running],
        )
        .map_err(err())?;
        tx.commit().map_err(err())
    }

    /// Records that `job`'s output reached `limit` bytes: its log holds no
    /// more.
    pub fn output_limited(&self, run: RunId, job: &str, limit: u64) -> Result<(), StateError> {
        self.set_job_column(run, job, "output_limit", limit, "record the output limit")
    }

    /// Records how many bytes `job` wrote past its output limit.
    pub fn output_dropped(&self, run: RunId, job: &str, bytes: u64) -> Result<(), StateError> {
        self.set_job_column(run, job, "output_dropped", bytes, "record dropped output")
    }

    /// Sets one counter `column` (a name from this file, never input) of
    /// `job` of `run`.
    fn set_job_column(
        &self,
        run: RunId,
        job: &str,
        column: &'static str,
        value: u64,
        action: &'static str,
    ) -> Result<(), StateError> {
        let conn = self.lock();
        let changed = conn
            .execute(
                &format!("UPDATE jobs SET {column} = ?3 WHERE run_id = ?1 AND name = ?2"),
                params![run, job, i64::try_from(value).unwrap_or(i64::MAX)],
            )
            .map_err(self.run_sql(run, action))?;
        if changed == 0 {
            return Err(self.missing_job(&conn, run, job));
        }
        Ok(())
    }

    /// Records one connection of `job`'s egress proxy (`egress.at` is when
    /// it ended).
    pub fn egress(&self, run: RunId, job: &str, egress: &Egress) -> Result<(), StateError> {
        let conn = self.lock();
        let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let changed = conn
            .execute(
                "INSERT INTO egress (job_id, at, kind, host, port, addr, allowed, detail,
                                     bytes_up, bytes_down, duration_ms)
                 SELECT id, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12
                 FROM jobs WHERE run_id = ?1 AND name = ?2",
                params![
                    run,
                    job,
                    egress.at,
                    egress.kind,
                    egress.host,
                    egress.port,
                    egress.addr,
                    egress.allowed,
                    egress.detail,
                    big(egress.bytes_up),
                    big(egress.bytes_down),
                    big(egress.duration_ms)
                ],
            )
            .map_err(self.run_sql(run, "record egress"))?;
        if changed == 0 {
            return Err(self.missing_job(&conn, run, job));
        }
        Ok(())
    }

    /// The `limit` most recent runs, newest first.
    pub fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StateError> {
        let conn = self.lock();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let err = self.sql("list runs");
        let mut stmt = conn
            .prepare_cached(&format!(
                "{SUMMARY_SELECT} GROUP BY r.id ORDER BY r.id DESC LIMIT ?1"
            ))
            .map_err(err)?;
        let runs = stmt
            .query_map([limit], summary_from_row)
            .and_then(Iterator::collect)
            .map_err(self.sql("list runs"))?;
        Ok(runs)
    }

    /// Everything recorded about run `id`, or `None` if there is no such
    /// run. Read in one transaction, so the run, its jobs and its steps are
    /// a consistent snapshot.
    pub fn get_run(&self, id: RunId) -> Result<Option<RunRecord>, StateError> {
        let mut conn = self.lock();
        let err = || self.run_sql(id, "read run");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(err())?;
        let summary = tx
            .query_row(
                &format!("{SUMMARY_SELECT} WHERE r.id = ?1 GROUP BY r.id"),
                [id],
                summary_from_row,
            )
            .optional()
            .map_err(err())?;
        let Some(summary) = summary else {
            return Ok(None);
        };
        let mut jobs: Vec<(i64, JobRecord)> = tx
            .prepare_cached(
                "SELECT id, name, needs, status, exit_code, reason, started_at, finished_at,
                        log_path, artifacts, execs, execs_lost, output_limit, output_dropped
                 FROM jobs WHERE run_id = ?1 ORDER BY position",
            )
            .and_then(|mut stmt| {
                stmt.query_map([id], job_from_row)
                    .and_then(Iterator::collect)
            })
            .map_err(err())?;
        {
            let mut steps = tx
                .prepare_cached(
                    "SELECT idx, name, status, exit_code, started_at, finished_at
                     FROM steps WHERE job_id = ?1 ORDER BY idx",
                )
                .map_err(err())?;
            let mut egress = tx
                .prepare_cached(
                    "SELECT at, kind, host, port, addr, allowed, detail, bytes_up, bytes_down,
                            duration_ms
                     FROM egress WHERE job_id = ?1 ORDER BY rowid",
                )
                .map_err(err())?;
            let mut alerts = tx
                .prepare_cached(
                    "SELECT at, rule, severity, action, description, summary, observation
                     FROM alerts WHERE job_id = ?1 ORDER BY rowid",
                )
                .map_err(err())?;
            let mut incidents = tx
                .prepare_cached(
                    "SELECT at, rule, summary, processes, took_ms
                     FROM incidents WHERE job_id = ?1 ORDER BY rowid",
                )
                .map_err(err())?;
            let mut processes = tx
                .prepare_cached(
                    "SELECT at, pid, ppid, uid, path, argv, argv_at_exec
                     FROM processes WHERE job_id = ?1 ORDER BY rowid",
                )
                .map_err(err())?;
            let mut files = tx
                .prepare_cached(
                    "SELECT path, change, size, executable
                     FROM files WHERE job_id = ?1 ORDER BY path",
                )
                .map_err(err())?;
            for (job_row, job) in &mut jobs {
                job.alerts = alerts
                    .query_map([*job_row], crate::monitoring::alert_from_row)
                    .and_then(Iterator::collect)
                    .map_err(err())?;
                job.incidents = incidents
                    .query_map([*job_row], crate::monitoring::incident_from_row)
                    .and_then(Iterator::collect)
                    .map_err(err())?;
                job.processes = processes
                    .query_map([*job_row], crate::monitoring::process_from_row)
                    .and_then(Iterator::collect)
                    .map_err(err())?;
                job.files = files
                    .query_map([*job_row], crate::monitoring::file_from_row)
                    .and_then(Iterator::collect)
                    .map_err(err())?;
                job.steps = steps
                    .query_map([*job_row], step_from_row)
                    .and_then(Iterator::collect)
                    .map_err(err())?;
                job.egress = egress
                    .query_map([*job_row], egress_from_row)
                    .and_then(Iterator::collect)
                    .map_err(err())?;
            }
        }
        tx.commit().map_err(err())?;
        Ok(Some(RunRecord {
            summary,
            jobs: jobs.into_iter().map(|(_, job)| job).collect(),
        }))
    }

    /// The id of the most recent run, if any.
    pub fn latest_run(&self) -> Result<Option<RunId>, StateError> {
        self.lock()
            .query_row("SELECT max(id) FROM runs", [], |row| row.get(0))
            .map_err(self.sql("find latest run"))
    }

    /// Marks as `Lost` every run still `Running` whose runner process is
    /// gone (exited, or its pid now belongs to another process, or the host
    /// rebooted), together with its `Pending` and `Running` jobs and steps;
    /// one transaction per run. Runs whose runner cannot be judged (no
    /// `/proc`) are left alone. Returns the ids marked, oldest first.
    pub fn recover_lost_runs(&self) -> Result<Vec<RunId>, StateError> {
        let candidates: Vec<(RunId, RunnerIdentity)> = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, runner_pid, runner_start_time, runner_boot_id
                     FROM runs WHERE status = 'running' ORDER BY id",
                )
                .map_err(self.sql("find running runs"))?;
            stmt.query_map([], |row| {
                let start_time: Option<i64> = row.get(2)?;
                Ok((
                    row.get(0)?,
                    RunnerIdentity {
                        pid: row.get(1)?,
                        start_time: start_time.and_then(|t| u64::try_from(t).ok()),
                        boot_id: row.get(3)?,
                    },
                ))
            })
            .and_then(Iterator::collect)
            .map_err(self.sql("find running runs"))?
        };
        let mut lost = Vec::new();
        for (run, runner) in candidates {
            if process::liveness(&runner) == Liveness::Gone && self.mark_lost(run)? {
                lost.push(run);
            }
        }
        Ok(lost)
    }

    /// Marks `run` and its unfinished jobs and steps `Lost`, unless another
    /// process finished or recovered it meanwhile. Returns whether it did.
    fn mark_lost(&self, run: RunId) -> Result<bool, StateError> {
        let mut conn = self.lock();
        let err = || self.run_sql(run, "mark run lost");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err())?;
        let changed = tx
            .execute(
                "UPDATE runs SET status = ?2 WHERE id = ?1 AND status = ?3",
                params![run, Status::Lost, Status::Running],
            )
            .map_err(err())?;
        if changed == 0 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE steps SET status = ?2
             WHERE job_id IN (SELECT id FROM jobs WHERE run_id = ?1) AND status IN (?3, ?4)",
            params![run, Status::Lost, Status::Pending, Status::Running],
        )
        .map_err(err())?;
        tx.execute(
            "UPDATE jobs SET status = ?2 WHERE run_id = ?1 AND status IN (?3, ?4)",
            params![run, Status::Lost, Status::Pending, Status::Running],
        )
        .map_err(err())?;
        tx.commit().map_err(err())?;
        Ok(true)
    }

    /// The connection. A thread that panicked while holding it cannot have
    /// left a transaction open (dropping a `Transaction` rolls it back), so
    /// a poisoned lock is safe to take over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn sql(&self, action: &'static str) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        move |source| StateError::Sql {
            path: self.db_path.clone(),
            action,
            source,
        }
    }

    pub(crate) fn run_sql(
        &self,
        run: RunId,
        action: &'static str,
    ) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        move |source| StateError::RunSql {
            path: self.db_path.clone(),
            run,
            action,
            source,
        }
    }

    /// The row id of `job` of `run`, or why there is none.
    pub(crate) fn job_row(
        &self,
        conn: &Connection,
        run: RunId,
        job: &str,
        action: &'static str,
    ) -> Result<i64, StateError> {
        let row: Option<i64> = conn
            .query_row(
                "SELECT id FROM jobs WHERE run_id = ?1 AND name = ?2",
                params![run, job],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.run_sql(run, action))?;
        row.ok_or_else(|| self.missing_job(conn, run, job))
    }

    /// Explains why `job` of `run` was not found.
    pub(crate) fn missing_job(&self, conn: &Connection, run: RunId, job: &str) -> StateError {
        match conn
            .query_row("SELECT 1 FROM runs WHERE id = ?1", [run], |_| Ok(()))
            .optional()
        {
            Ok(Some(())) => StateError::UnknownJob {
                run,
                job: job.to_owned(),
            },
            Ok(None) => StateError::UnknownRun { run },
            Err(e) => self.run_sql(run, "look up job")(e),
        }
    }

    /// Explains why step `index` of `job` of `run` was not found.
    fn missing_step(&self, conn: &Connection, run: RunId, job: &str, index: usize) -> StateError {
        match conn
            .query_row(
                "SELECT 1 FROM jobs WHERE run_id = ?1 AND name = ?2",
                params![run, job],
                |_| Ok(()),
            )
            .optional()
        {
            Ok(Some(())) => StateError::UnknownStep {
                run,
                job: job.to_owned(),
                index,
            },
            Ok(None) => self.missing_job(conn, run, job),
            Err(e) => self.run_sql(run, "look up step")(e),
        }
    }
}

/// Closes the steps matched by `filter` (with `?1` bound to `key`) that are
/// still open: `Pending` ones become `Skipped`, `Running` ones get `status`
/// and finish at `now`.
fn finish_leftover_steps(
    conn: &Connection,
    filter: &str,
    key: i64,
    status: Status,
    now: Timestamp,
) -> rusqlite::Result<()> {
    conn.execute(
        &format!("UPDATE steps SET status = ?2 WHERE {filter} AND status = ?3"),
        params![key, Status::Skipped, Status::Pending],
    )?;
    conn.execute(
        &format!("UPDATE steps SET status = ?2, finished_at = ?3 WHERE {filter} AND status = ?4"),
        params![key, status, now, Status::Running],
    )?;
    Ok(())
}

/// Selects the columns [`summary_from_row`] reads; add `WHERE`, `GROUP BY
/// r.id` and ordering.
const SUMMARY_SELECT: &str = "
    SELECT r.id, r.pipeline, r.file, r.status, r.exit_code, r.started_at, r.finished_at,
           count(j.id),
           coalesce(sum(j.status = 'success'), 0),
           coalesce(sum(j.status IN ('failed', 'timeout', 'lost', 'cancelled')), 0),
           coalesce(sum(j.status = 'skipped'), 0),
           r.degraded
    FROM runs r LEFT JOIN jobs j ON j.run_id = r.id";

fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<RunSummary> {
    let started_at: Timestamp = row.get(5)?;
    let finished_at: Option<Timestamp> = row.get(6)?;
    Ok(RunSummary {
        id: row.get(0)?,
        pipeline: row.get(1)?,
        file: row.get::<_, PathColumn>(2)?.0,
        status: row.get(3)?,
        exit_code: row.get(4)?,
        started_at,
        finished_at,
        duration_ms: duration(Some(started_at), finished_at),
        jobs_total: get_usize(row, 7)?,
        jobs_succeeded: get_usize(row, 8)?,
        jobs_failed: get_usize(row, 9)?,
        jobs_skipped: get_usize(row, 10)?,
        degraded: row.get::<_, JsonColumn>(11)?.0,
    })
}

/// Reads a job row (without its steps) and its row id.
fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, JobRecord)> {
    let started_at: Option<Timestamp> = row.get(6)?;
    let finished_at: Option<Timestamp> = row.get(7)?;
    let output_limit: Option<i64> = row.get(12)?;
    let output_dropped: i64 = row.get(13)?;
    Ok((
        row.get(0)?,
        JobRecord {
            id: row.get(1)?,
            needs: row.get::<_, JsonColumn>(2)?.0,
            status: row.get(3)?,
            exit_code: row.get(4)?,
            reason: row.get(5)?,
            started_at,
            finished_at,
            duration_ms: duration(started_at, finished_at),
            log_path: row.get::<_, Option<PathColumn>>(8)?.map(|p| p.0),
            artifacts: row.get::<_, JsonColumn>(9)?.0,
            steps: Vec::new(),
            egress: Vec::new(),
            alerts: Vec::new(),
            incidents: Vec::new(),
            execs: u64::try_from(row.get::<_, i64>(10)?).unwrap_or(0),
            execs_lost: u64::try_from(row.get::<_, i64>(11)?).unwrap_or(0),
            processes: Vec::new(),
            files: Vec::new(),
            output_cut: output_limit.map(|limit| OutputCut {
                limit: u64::try_from(limit).unwrap_or(0),
                dropped: u64::try_from(output_dropped).unwrap_or(0),
            }),
        },
    ))
}

fn egress_from_row(row: &Row<'_>) -> rusqlite::Result<Egress> {
    let port: i64 = row.get(3)?;
    let unsigned = |idx: usize| -> rusqlite::Result<u64> {
        let value: i64 = row.get(idx)?;
        u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, value))
    };
    Ok(Egress {
        at: row.get(0)?,
        kind: row.get(1)?,
        host: row.get(2)?,
        port: u16::try_from(port).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(3, port))?,
        addr: row.get(4)?,
        allowed: row.get(5)?,
        detail: row.get(6)?,
        bytes_up: unsigned(7)?,
        bytes_down: unsigned(8)?,
        duration_ms: unsigned(9)?,
    })
}

fn step_from_row(row: &Row<'_>) -> rusqlite::Result<StepRecord> {
    let started_at: Option<Timestamp> = row.get(4)?;
    let finished_at: Option<Timestamp> = row.get(5)?;
    Ok(StepRecord {
        index: get_usize(row, 0)?,
        name: row.get(1)?,
        status: row.get(2)?,
        exit_code: row.get(3)?,
        started_at,
        finished_at,
        duration_ms: duration(started_at, finished_at),
    })
}

/// Reads a non-negative integer column as `usize`.
fn get_usize(row: &Row<'_>, idx: usize) -> rusqlite::Result<usize> {
    let value: i64 = row.get(idx)?;
    usize::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, value))
}

/// Binds a position or index. One beyond `i64` (impossible for a `Vec`
/// index on 64-bit hosts) becomes -1, which matches no row.
struct SqlIndex(usize);

impl ToSql for SqlIndex {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(i64::try_from(self.0).unwrap_or(-1)))
    }
}

/// Binds a path losslessly: as TEXT when it is valid UTF-8 (readable with
/// the `sqlite3` shell), as a BLOB of its raw bytes otherwise.
struct SqlPath<'a>(&'a Path);

impl ToSql for SqlPath<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let value = match self.0.to_str() {
            Some(text) => ValueRef::Text(text.as_bytes()),
            None => ValueRef::Blob(self.0.as_os_str().as_bytes()),
        };
        Ok(ToSqlOutput::Borrowed(value))
    }
}

/// Reads a path written by [`SqlPath`].
struct PathColumn(PathBuf);

impl FromSql for PathColumn {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                Ok(PathColumn(PathBuf::from(OsStr::from_bytes(bytes))))
            }
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

/// Binds a list of strings as a JSON array.
struct JsonList<'a>(&'a [String]);

impl ToSql for JsonList<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        serde_json::to_string(self.0)
            .map(ToSqlOutput::from)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    }
}

/// Reads a JSON array of strings written by [`JsonList`].
struct JsonColumn(Vec<String>);

impl FromSql for JsonColumn {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        serde_json::from_str(value.as_str()?)
            .map(JsonColumn)
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}
