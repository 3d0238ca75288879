//! Opening the database: connection settings and schema migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version`; migration `n`
//! (1-based) takes the database from version `n - 1` to `n`, in one
//! `IMMEDIATE` transaction together with the version bump, so a crash or a
//! concurrent opener never sees a half-migrated database. Migrations are
//! append-only: never edit one that has shipped.
//!
//! Settings that differ from the run record's database, and why:
//! - `synchronous = FULL`: a commit is durable before it returns. A rekey
//!   replaces the key file right after its commit; with `NORMAL`, a power
//!   loss could roll the commit back after the old key is gone. Writes are
//!   few (a lease per secret per job), so the fsyncs cost little.
//! - `secure_delete = ON`: deleted rows (removed secrets, data keys wrapped
//!   with a replaced key) are overwritten with zeros, not left in free pages.
//! - `temp_store = MEMORY`: no temporary files.
//! - The WAL is checkpointed on close (SQLite's default), so a replaced
//!   wrapped key does not linger in the `-wal` file.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::SecretsError;

/// How long a writer waits for another connection's lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `PRAGMA application_id` of Airlock secret stores: "AIRS".
pub(crate) const APPLICATION_ID: i32 = 0x4149_5253;

/// The migrations, oldest first. The schema version is their count.
const MIGRATIONS: &[&str] = &[
    // 1: secrets, their versions, leases.
    //
    // `secrets.version` is the current version; `scopes` a JSON array of
    // patterns. Times are unix milliseconds. Each version holds its data
    // key wrapped with the key-encryption key `kek_id` (all rows share one
    // `kek_id`; a rekey rewrites them all in one transaction) and its value
    // sealed with the data key; both with a 24-byte nonce and a 16-byte tag.
    // Leases name their secret rather than reference it, so that a lease's
    // record outlives the secret.
    r"
    CREATE TABLE secrets (
        id          INTEGER PRIMARY KEY,
        name        TEXT    NOT NULL UNIQUE,
        scopes      TEXT    NOT NULL,
        max_age_ms  INTEGER CHECK (max_age_ms IS NULL OR max_age_ms >= 0),
        version     INTEGER NOT NULL CHECK (version >= 1),
        created_at  INTEGER NOT NULL,
        rotated_at  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE versions (
        secret_id   INTEGER NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
        version     INTEGER NOT NULL CHECK (version >= 1),
        created_at  INTEGER NOT NULL,
        kek_id      BLOB    NOT NULL CHECK (length(kek_id) = 8),
        dek_nonce   BLOB    NOT NULL CHECK (length(dek_nonce) = 24),
        wrapped_dek BLOB    NOT NULL CHECK (length(wrapped_dek) = 48),
        nonce       BLOB    NOT NULL CHECK (length(nonce) = 24),
        ciphertext  BLOB    NOT NULL CHECK (length(ciphertext) >= 16),
        PRIMARY KEY (secret_id, version)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE leases (
        id          TEXT    PRIMARY KEY,
        secret      TEXT    NOT NULL,
        version     INTEGER NOT NULL,
        pipeline    TEXT    NOT NULL,
        job         TEXT    NOT NULL,
        run_id      INTEGER NOT NULL,
        granted_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        state       TEXT    NOT NULL CHECK (state IN ('active','revoked','expired')),
        ended_at    INTEGER
    ) STRICT, WITHOUT ROWID;

    CREATE INDEX leases_by_run ON leases (run_id);
    CREATE INDEX leases_by_secret ON leases (secret);
    CREATE INDEX leases_active ON leases (expires_at) WHERE state = 'active';
    ",
];

/// The schema version this build writes.
pub(crate) fn current_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).expect("a handful of migrations fits in i64")
}

/// Opens `path` (creating it), configures the connection and brings the
/// schema up to date.
pub(crate) fn open(path: &Path) -> Result<Connection, SecretsError> {
    let open_err = |source| SecretsError::Open {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    // First, so that everything below waits for other connections' locks.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(open_err)?;
    conn.pragma_update(None, "secure_delete", true)
        .map_err(open_err)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(open_err)?;
    let journal = durable::sqlite::use_wal(&conn, BUSY_TIMEOUT).map_err(open_err)?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(SecretsError::NoWal {
            path: path.to_owned(),
            mode: journal,
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), SecretsError> {
    let open_err = |source| SecretsError::Open {
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
        return Err(SecretsError::ForeignDatabase {
            path: path.to_owned(),
            found: app_id,
        });
    }
    if found > supported {
        return Err(SecretsError::FutureSchema {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    let mut version = found;
    for sql in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)) {
        version += 1;
        let migrate_err = |source| SecretsError::Migrate {
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
        let conn = open(&dir.path().join("secrets.db")).expect("open");
        let get = |name: &str| -> String {
            conn.query_row(&format!("PRAGMA {name}"), [], |row| {
                row.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| format!("{v:?}"))
            .expect("pragma")
        };
        assert_eq!(get("journal_mode"), r#"Text("wal")"#);
        assert_eq!(get("synchronous"), "Integer(2)"); // FULL
        assert_eq!(get("foreign_keys"), "Integer(1)");
        assert_eq!(get("secure_delete"), "Integer(1)");
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
            matches!(err, SecretsError::ForeignDatabase { found: 42, .. }),
            "{err}"
        );
    }

    #[test]
    fn tables_are_strict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open(&dir.path().join("secrets.db")).expect("open");
        let err = conn
            .execute(
                "INSERT INTO leases VALUES ('x', 'S', 'one', 'p', 'j', 1, 0, 0, 'active', NULL)",
                [],
            )
            .expect_err("STRICT rejects text in an INTEGER column");
        assert!(
            err.to_string()
                .contains("cannot store TEXT value in INTEGER column"),
            "{err}"
        );
    }
}
