//! The store's private directories and files (`durable::fs`), with the
//! store's errors.

use std::path::Path;

pub(crate) use durable::fs::{sync_dir, write_atomic, Existing, DIR_MODE, FILE_MODE};

use crate::error::SecretsError;

/// Creates `path` and any missing parents with mode 0700.
pub(crate) fn create_private_dir_all(path: &Path) -> Result<(), SecretsError> {
    durable::fs::create_private_dir_all(path).map_err(|source| SecretsError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

/// Creates the database file with mode 0600 if it does not exist yet, so
/// that SQLite never creates it with the umask's mode.
pub(crate) fn create_private_file(path: &Path) -> Result<(), SecretsError> {
    durable::fs::create_private_file(path).map_err(|source| SecretsError::CreateDb {
        path: path.to_owned(),
        source,
    })
}
