//! Opening the database: connection settings and schema migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version`; migration `n`
//! (1-based) takes the database from version `n - 1` to `n`. Migrations run
//! in one `IMMEDIATE` transaction together with the version bump, so a crash
//! or a concurrent opener never sees a half-migrated database. Migrations are
//! append-only: never edit one that has shipped.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::StateError;

/// How long a writer waits for another connection's lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `PRAGMA application_id` of Airlock state databases: "AIRL".
pub(crate) const APPLICATION_ID: i32 = 0x4149_524C;

/// The migrations, oldest first. The schema version is their count.
const MIGRATIONS: &[&str] = &[
    // 1: runs, jobs, steps.
    //
    // Statuses are checked against the names of `Status`; adding one needs a
    // migration that rebuilds the table. Paths are TEXT when valid UTF-8 and
    // BLOB (raw bytes) otherwise, hence `ANY`. Times are unix milliseconds.
    // `needs` and `artifacts` are JSON arrays of strings.
    r"
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
    ",
    // 2: the isolation layers a run ran without, by the operator's choice:
    // a JSON array of strings, one line per layer. Older runs get `[]`.
    r"
    ALTER TABLE runs ADD COLUMN degraded TEXT NOT NULL DEFAULT '[]';
    ",
    // 3: every connection a job's egress proxy and DNS responder handled,
    // allowed or denied, and every attempt of the job to reach an address
    // directly (`direct`, always denied). `detail` is the rule that allowed
    // it or why it was denied; `at` is when it ended (unix milliseconds).
    r"
    CREATE TABLE egress (
        job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        at          INTEGER NOT NULL,
        kind        TEXT    NOT NULL CHECK (kind IN ('http','connect','dns','direct')),
        host        TEXT    NOT NULL,
        port        INTEGER NOT NULL,
        addr        TEXT,
        allowed     INTEGER NOT NULL CHECK (allowed IN (0, 1)),
        detail      TEXT    NOT NULL,
        bytes_up    INTEGER NOT NULL,
        bytes_down  INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL
    ) STRICT;

    CREATE INDEX egress_job ON egress (job_id);
    ",
    // 4: monitoring. Jobs get the status `contained` (a rule's `kill`
    // action stopped the job): SQLite cannot change a CHECK in place, so
    // `jobs` is rebuilt (SQLite's documented 12 steps; foreign keys are off
    // while migrations run and checked after). Then: alerts raised by
    // detection rules, incidents (a containment and the process tree it
    // froze, as JSON), the processes a job executed and the files it left
    // in its workspace (both capped by the engine), and per pipeline/job
    // baselines of endpoints and binaries seen in successful runs.
    r"
    CREATE TABLE jobs_new (
        id          INTEGER PRIMARY KEY,
        run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        position    INTEGER NOT NULL,
        name        TEXT    NOT NULL,
        needs       TEXT    NOT NULL,
        status      TEXT    NOT NULL CHECK (status IN
                        ('pending','running','success','failed','timeout','skipped','lost','cancelled','contained')),
        exit_code   INTEGER,
        reason      TEXT,
        started_at  INTEGER,
        finished_at INTEGER,
        log_path    ANY,
        artifacts   TEXT    NOT NULL,
        UNIQUE (run_id, name)
    ) STRICT;
    INSERT INTO jobs_new SELECT id, run_id, position, name, needs, status, exit_code, reason,
                                started_at, finished_at, log_path, artifacts FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_new RENAME TO jobs;

    CREATE TABLE alerts (
        job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        at          INTEGER NOT NULL,
        rule        TEXT    NOT NULL,
        severity    TEXT    NOT NULL,
        action      TEXT    NOT NULL CHECK (action IN ('alert','kill')),
        description TEXT    NOT NULL,
        summary     TEXT    NOT NULL,
        observation TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX alerts_job ON alerts (job_id);

    CREATE TABLE incidents (
        job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        at          INTEGER NOT NULL,
        rule        TEXT    NOT NULL,
        summary     TEXT    NOT NULL,
        processes   TEXT    NOT NULL,
        took_ms     INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX incidents_job ON incidents (job_id);

    CREATE TABLE processes (
        job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        at          INTEGER NOT NULL,
        pid         INTEGER NOT NULL,
        ppid        INTEGER NOT NULL,
        uid         INTEGER NOT NULL,
        path        TEXT    NOT NULL,
        argv        TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX processes_job ON processes (job_id);

    CREATE TABLE files (
        job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        path        TEXT    NOT NULL,
        change      TEXT    NOT NULL CHECK (change IN ('created','modified')),
        size        INTEGER NOT NULL,
        executable  INTEGER NOT NULL CHECK (executable IN (0, 1))
    ) STRICT;
    CREATE INDEX files_job ON files (job_id);

    ALTER TABLE jobs ADD COLUMN execs INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN execs_lost INTEGER NOT NULL DEFAULT 0;

    CREATE TABLE baseline_runs (
        pipeline    TEXT    NOT NULL,
        job         TEXT    NOT NULL,
        runs        INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        PRIMARY KEY (pipeline, job)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE baselines (
        pipeline    TEXT    NOT NULL,
        job         TEXT    NOT NULL,
        kind        TEXT    NOT NULL CHECK (kind IN ('endpoint','binary')),
        value       TEXT    NOT NULL,
        first_seen  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        PRIMARY KEY (pipeline, job, kind, value)
    ) STRICT, WITHOUT ROWID;
    ",
    // 5: whether a process's recorded arguments are those it was started
    // with (read at the exec, by the kernel) or were read from /proc
    // afterwards, when the program may have rewritten them. Rows from
    // before are 0: read afterwards, or not known to be otherwise.
    r"
    ALTER TABLE processes ADD COLUMN argv_at_exec INTEGER NOT NULL DEFAULT 0
        CHECK (argv_at_exec IN (0, 1));
    ",
    // 6: where a job's log was cut (`--max-output`): the limit its output
    // reached (NULL if it never did) and how many bytes it wrote past it.
    r"
    ALTER TABLE jobs ADD COLUMN output_limit INTEGER CHECK (output_limit > 0);
    ALTER TABLE jobs ADD COLUMN output_dropped INTEGER NOT NULL DEFAULT 0
        CHECK (output_dropped >= 0);
    ",
];

/// The schema version this build writes.
pub(crate) fn current_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).expect("a handful of migrations fits in i64")
}

/// Opens `path` (creating it), configures the connection and brings the
/// schema up to date.
pub(crate) fn open(path: &Path) -> Result<Connection, StateError> {
    let open_err = |source| StateError::Open {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    // First, so that everything below waits for other connections' locks.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let journal = durable::sqlite::use_wal(&conn, BUSY_TIMEOUT).map_err(open_err)?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(StateError::NoWal {
            path: path.to_owned(),
            mode: journal,
        });
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    // Every `airlock` command is a short process: checkpointing (and
    // fsyncing) the WAL into the database at each close would cost more
    // than the command's own writes. The WAL stays on disk and is
    // checkpointed by SQLite's automatic checkpoint as it grows; a crash
    // loses nothing a checkpoint on close would have saved.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(open_err)?;
    // Foreign keys are off while migrations run, as SQLite requires for
    // rebuilding a table that others reference (`DROP TABLE` would
    // otherwise cascade); `migrate` checks them before it commits. (The
    // bundled SQLite turns them on by default.)
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(open_err)?;
    migrate(&mut conn, path)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(open_err)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    let open_err = |source| StateError::Open {
        path: path.to_owned(),
        source,
    };
    // IMMEDIATE: take the write lock before reading the version, so that two
    // processes opening a new database cannot both migrate it.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_err)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(open_err)?;
    let app_id: i32 = tx
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(open_err)?;
    let supported = current_version();
    if app_id != APPLICATION_ID && (app_id != 0 || found != 0) {
        return Err(StateError::ForeignDatabase {
            path: path.to_owned(),
            found: app_id,
        });
    }
    if found > supported {
        return Err(StateError::FutureSchema {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    let mut version = found;
    for sql in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)) {
        version += 1;
        let migrate_err = |source| StateError::Migrate {
            path: path.to_owned(),
            version,
            source,
        };
        tx.execute_batch(sql).map_err(migrate_err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(migrate_err)?;
        let dangling: i64 = tx
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
                row.get(0)
            })
            .map_err(migrate_err)?;
        if dangling != 0 {
            return Err(migrate_err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                Some(format!("{dangling} rows break a foreign key")),
            )));
        }
    }
    if app_id == 0 {
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(open_err)?;
    }
    tx.commit().map_err(open_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilding_jobs_keeps_every_row_that_refers_to_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            // A database as version 3 left it, with a run in it.
            let conn = Connection::open(&path).expect("open");
            for sql in MIGRATIONS.iter().take(3) {
                conn.execute_batch(sql).expect("old migration");
            }
            conn.execute_batch(
                "PRAGMA user_version = 3;
                 PRAGMA application_id = 1095324236;
                 INSERT INTO runs (pipeline, file, status, started_at, runner_pid)
                     VALUES ('p', 'f', 'failed', 1, 1);
                 INSERT INTO jobs (id, run_id, position, name, needs, status, artifacts)
                     VALUES (7, 1, 0, 'build', '[]', 'failed', '[]');
                 INSERT INTO steps (job_id, idx, name, status) VALUES (7, 0, 's', 'failed');
                 INSERT INTO egress (job_id, at, kind, host, port, allowed, detail, bytes_up,
                                     bytes_down, duration_ms)
                     VALUES (7, 1, 'dns', 'x.test', 53, 0, 'no rule', 0, 0, 0);",
            )
            .expect("fill");
        }
        let conn = open(&path).expect("migrate");
        let count = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .expect("count")
        };
        assert_eq!(
            (count("jobs"), count("steps"), count("egress")),
            (1, 1, 1),
            "the rebuild of jobs must not cascade into the tables that refer to it"
        );
        conn.execute("UPDATE jobs SET status = 'contained' WHERE id = 7", [])
            .expect("the new status is allowed");
        // The rebuilt table still cascades.
        conn.execute("DELETE FROM runs", []).expect("delete");
        assert_eq!((count("jobs"), count("steps"), count("egress")), (0, 0, 0));
    }

    #[test]
    fn connection_is_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open(&dir.path().join("state.db")).expect("open");
        let get = |name: &str| -> String {
            conn.query_row(&format!("PRAGMA {name}"), [], |row| {
                row.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| format!("{v:?}"))
            .expect("pragma")
        };
        assert_eq!(get("journal_mode"), r#"Text("wal")"#);
        assert_eq!(get("synchronous"), "Integer(1)"); // NORMAL
        assert_eq!(get("foreign_keys"), "Integer(1)");
        assert_eq!(get("busy_timeout"), "Integer(5000)");
        assert_eq!(
            get("user_version"),
            format!("Integer({})", current_version())
        );
        assert_eq!(get("application_id"), format!("Integer({APPLICATION_ID})"));
    }

    #[test]
    fn foreign_sqlite_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("other.db");
        let other = Connection::open(&path).expect("create");
        other
            .execute_batch("PRAGMA application_id = 42; CREATE TABLE t (x);")
            .expect("setup");
        drop(other);
        let err = open(&path).expect_err("foreign database must be refused");
        assert!(
            matches!(err, StateError::ForeignDatabase { found: 42, .. }),
            "{err}"
        );
    }

    #[test]
    fn failed_migration_leaves_version_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        // A table named like ours makes migration 1 fail halfway.
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch("CREATE TABLE jobs (x);").expect("setup");
        drop(conn);
        let err = open(&path).expect_err("migration must fail");
        assert!(
            matches!(err, StateError::Migrate { version: 1, .. }),
            "{err}"
        );
        let conn = Connection::open(&path).expect("reopen");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("user_version");
        let runs: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'runs'",
                [],
                |row| row.get(0),
            )
            .expect("schema");
        assert_eq!((version, runs), (0, 0));
    }
}
