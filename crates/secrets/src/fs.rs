//! Private directories and files, and durable atomic file replacement.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::SecretsError;

/// Mode of directories the store creates: owner only.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of the database and key files (SQLite gives the database's `-wal`
/// and `-shm` files the database's mode).
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents with mode 0700. An existing
/// directory is left as it is.
pub(crate) fn create_private_dir_all(path: &Path) -> Result<(), SecretsError> {
    if path.is_dir() {
        return Ok(());
    }
    let err = |source| SecretsError::CreateDir {
        path: path.to_owned(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(err)?;
    // The umask may have taken bits away, never added any: set exactly.
    fs::set_permissions(path, Permissions::from_mode(DIR_MODE)).map_err(err)
}

/// Creates the database file with mode 0600 if it does not exist yet, so
/// that SQLite never creates it with the umask's mode.
pub(crate) fn create_private_file(path: &Path) -> Result<(), SecretsError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map(drop)
        .map_err(|source| SecretsError::CreateDb {
            path: path.to_owned(),
            source,
        })
}

/// Makes the directory entries of `dir` durable (a rename or link in it).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// How [`write_atomic`] treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Replace it (atomically: readers see the old or the new file).
    Replace,
    /// Leave it and fail with `AlreadyExists`.
    Keep,
}

/// Writes `contents` to `dir/name` durably and atomically, mode 0600:
/// a temporary file in `dir` is written and fsynced, then renamed (or, with
/// [`Existing::Keep`], hard-linked, which fails if the name exists) to
/// `name`, and `dir` is fsynced. A crash leaves the old file or the new one,
/// never a partial one; at worst a temporary file is left behind.
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    contents: &[u8],
    existing: Existing,
) -> io::Result<PathBuf> {
    let target = dir.join(name);
    let mut suffix = [0_u8; 8];
    getrandom::fill(&mut suffix).map_err(io::Error::other)?;
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        crate::key::hex(&suffix)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        match existing {
            Existing::Replace => fs::rename(&tmp, &target)?,
            Existing::Keep => {
                fs::hard_link(&tmp, &target)?;
                fs::remove_file(&tmp)?;
            }
        }
        sync_dir(dir)
    })();
    if result.is_err() {
        // Best effort: the temporary file is private and will be
        // overwritten by no one; removing it only tidies up.
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| target)
}
