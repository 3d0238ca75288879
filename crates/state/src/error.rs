//! Errors of the run record. Each names the file or run it is about.

use std::io;
use std::path::PathBuf;

use crate::model::{RunId, Status};

/// Something went wrong reading or writing the run record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A directory of the state home could not be created or made private.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// A run's directory already exists, so creating it would mix the new
    /// run's files with an older run's.
    #[error(
        "run directory {path} already exists (left over from an earlier state database?); move it away"
    )]
    RunDirExists {
        /// The directory.
        path: PathBuf,
    },

    /// The database file could not be created with private permissions.
    #[error("cannot create state database {path}: {source}")]
    CreateDb {
        /// The database file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// SQLite could not open or configure the database.
    #[error("cannot open state database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// SQLite refused to put the database in WAL mode (e.g. on a file system
    /// without shared memory support), which concurrent runners need.
    #[error("state database {path}: cannot use WAL journal mode (journal mode is {mode:?})")]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },

    /// The database was written by a newer Airlock whose schema this one does
    /// not know; it is left untouched.
    #[error(
        "state database {path} has schema version {found}, but this airlock knows only up to version {supported}; use a newer airlock"
    )]
    FutureSchema {
        /// The database file.
        path: PathBuf,
        /// The database's `user_version`.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },

    /// The file is an SQLite database, but not one of Airlock's.
    #[error("{path} is not an airlock state database (application id {found:#010x})")]
    ForeignDatabase {
        /// The database file.
        path: PathBuf,
        /// The database's `application_id`.
        found: i32,
    },

    /// A schema migration failed; the transaction was rolled back and the
    /// database is at its previous version.
    #[error("cannot migrate state database {path} to schema version {version}: {source}")]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The version being migrated to.
        version: i64,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// A query not tied to one run failed.
    #[error("state database {path}: cannot {action}: {source}")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// What was being done, e.g. "list runs".
        action: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// A query about one run failed; nothing of it was written.
    #[error("state database {path}: run {run}: cannot {action}: {source}")]
    RunSql {
        /// The database file.
        path: PathBuf,
        /// The run.
        run: RunId,
        /// What was being done, e.g. "record job start".
        action: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// No run has this id.
    #[error("unknown run {run}")]
    UnknownRun {
        /// The run id asked for.
        run: RunId,
    },

    /// The run has no job with this id.
    #[error("run {run}: unknown job {job:?}")]
    UnknownJob {
        /// The run.
        run: RunId,
        /// The job id asked for.
        job: String,
    },

    /// The job has no step with this index.
    #[error("run {run}: job {job:?} has no step {index}")]
    UnknownStep {
        /// The run.
        run: RunId,
        /// The job.
        job: String,
        /// The (zero-based) step index asked for.
        index: usize,
    },

    /// `begin_run` was given the same job id twice; no run was recorded.
    #[error("cannot record run: job id {job:?} appears twice")]
    DuplicateJob {
        /// The repeated job id.
        job: String,
    },

    /// A `*_finished` call was given a status that is not final.
    #[error("run {run}: {status} is not a final status")]
    NotTerminal {
        /// The run.
        run: RunId,
        /// The status given.
        status: Status,
    },

    /// A value could not be encoded as JSON for the database.
    #[error("cannot encode {what} for the state database: {why}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        why: String,
    },
}
