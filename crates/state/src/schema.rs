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
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(open_err)?;
    let journal: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .map_err(open_err)?;
    if !journal.eq_ignore_ascii_case("wal") {
        // WAL is persistent; only the first opener of a new file switches it.
        let journal: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_err)?;
        if !journal.eq_ignore_ascii_case("wal") {
            return Err(StateError::NoWal {
                path: path.to_owned(),
                mode: journal,
            });
        }
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
    migrate(&mut conn, path)?;
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
