//! Private directories and files of the state home.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::error::StateError;

use durable::fs::DIR_MODE;

/// Creates `path` and any missing parents with mode 0700 (see
/// [`durable::fs::create_private_dir_all`]).
pub(crate) fn create_private_dir_all(path: &Path) -> Result<(), StateError> {
    durable::fs::create_private_dir_all(path).map_err(|source| StateError::CreateDir {
        path: path.to_owned(),
        source,
    })
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
/// that SQLite never creates it world-readable (SQLite gives its `-wal` and
/// `-shm` files the same mode).
pub(crate) fn create_private_file(path: &Path) -> Result<(), StateError> {
    durable::fs::create_private_file(path).map_err(|source| StateError::CreateDb {
        path: path.to_owned(),
        source,
    })
}
