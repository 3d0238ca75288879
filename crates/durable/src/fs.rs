//! Private directories and files, and durable atomic file replacement:
//! directories 0700, files 0600, writes made durable with an fsync of the
//! file and of its directory.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the directories: owner only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files: owner read/write only.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents with mode 0700. An existing
/// directory is left as it is.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    // The umask may have taken bits away, never added any: set exactly.
    fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
}

/// Creates `path` with mode 0600 if it does not exist yet (so that a
/// library opening it later, SQLite say, never creates it with the umask's
/// mode). An existing file is left as it is.
pub fn create_private_file(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map(drop)
}

/// Opens `path` for reading and appending, creating it with mode 0600.
/// Returns whether it was created (its directory then needs a sync).
pub fn open_private_append(path: &Path) -> io::Result<(File, bool)> {
    match OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(file) => Ok((file, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map(|f| (f, false)),
        Err(e) => Err(e),
    }
}

/// Makes the directory entries of `dir` durable (a rename or link in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// How [`write_atomic`] treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
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
pub fn write_atomic(
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
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
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
