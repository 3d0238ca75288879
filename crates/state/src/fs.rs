//! Private directories and files of the state home.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::StateError;

/// Mode of directories Airlock creates: owner only.
const DIR_MODE: u32 = 0o700;
/// Mode of the database file (SQLite gives its `-wal` and `-shm` files the
/// same mode).
const DB_MODE: u32 = 0o600;

/// Creates `path` and any missing parents with mode 0700. An existing
/// directory is left as it is: its owner chose its mode.
pub(crate) fn create_private_dir_all(path: &Path) -> Result<(), StateError> {
    if path.is_dir() {
        return Ok(());
    }
    let err = |source| StateError::CreateDir {
        path: path.to_owned(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(err)?;
    // The umask may have taken bits away; never added any. Set exactly.
    fs::set_permissions(path, Permissions::from_mode(DIR_MODE)).map_err(err)
}

/// Creates the directory `path` (its parent must exist) with mode 0700.
/// Fails if it already exists, so that one run never inherits another's
/// files.
pub(crate) fn create_run_dir(path: &Path) -> Result<(), StateError> {
    let err = |source| StateError::CreateDir {
        path: path.to_owned(),
        source,
    };
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(StateError::RunDirExists {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(err(e)),
    }
    fs::set_permissions(path, Permissions::from_mode(DIR_MODE)).map_err(err)
}

/// Creates the database file with mode 0600 if it does not exist yet, so
/// that SQLite never creates it world-readable.
pub(crate) fn create_private_file(path: &Path) -> Result<(), StateError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(DB_MODE)
        .open(path)
        .map(drop)
        .map_err(|source| StateError::CreateDb {
            path: path.to_owned(),
            source,
        })
}
