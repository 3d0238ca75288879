//! Copying a job's artifacts out of its sandbox.
//!
//! The job owns every byte of its workspace, symlinks included, so the
//! runner never resolves a path in it the ordinary way. It opens the
//! sandbox's root (`/proc/PID/root`) and resolves each artifact with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: an absolute or `..`
//! symlink planted by the job stays inside the job's root. Inside a copied
//! directory, entries are opened one name at a time with `O_NOFOLLOW`;
//! symlinks, fifos and devices are skipped and reported.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{openat, openat2, Dir, FileType, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

/// Deepest directory nesting copied.
const MAX_DEPTH: usize = 64;
/// Most entries copied per job.
const MAX_ENTRIES: usize = 100_000;

/// What was copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Regular files copied.
    pub files: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Entries left out (symlinks, special files), as `path: why`.
    pub skipped: Vec<String>,
}

/// Why an artifact could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The artifact does not exist in the workspace.
    #[error("artifact {0:?} not found in the workspace")]
    Missing(String),
    /// The artifact path is a symlink or a special file.
    #[error("artifact {0:?} is not a regular file or directory")]
    NotRegular(String),
    /// Too many entries.
    #[error("artifacts hold more than {MAX_ENTRIES} entries")]
    TooMany,
    /// Reading from the sandbox failed.
    #[error("reading artifact {path:?}: {source}")]
    Read {
        /// Path inside the workspace.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Writing to the run directory failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// Host path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Copies `paths` (relative to `workdir` inside the sandbox whose root the
/// host sees at `root`) into `dest`, keeping their relative layout.
pub fn copy_out(
    root: &Path,
    workdir: &str,
    paths: &[String],
    dest: &Path,
) -> Result<CopyReport, ArtifactError> {
    let read_err = |path: &str| {
        let path = path.to_string();
        move |e: Errno| ArtifactError::Read {
            path,
            source: e.into(),
        }
    };
    let root_fd = openat(
        CWD,
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(read_err("/"))?;
    let mut report = CopyReport::default();
    let mut entries = 0;
    for rel in paths {
        let inside = format!("{}/{}", workdir.trim_matches('/'), rel);
        let fd = match openat2(
            &root_fd,
            inside.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Err(ArtifactError::Missing(rel.clone())),
            Err(Errno::LOOP) => return Err(ArtifactError::NotRegular(rel.clone())),
            Err(e) => return Err(read_err(rel)(e)),
        };
        let target = dest.join(rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|source| ArtifactError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        match kind(&fd).map_err(read_err(rel))? {
            FileType::RegularFile => copy_file(fd, rel, &target, &mut report)?,
            FileType::Directory => {
                copy_dir(fd, rel, &target, 0, &mut entries, &mut report)?;
            }
            _ => return Err(ArtifactError::NotRegular(rel.clone())),
        }
    }
    Ok(report)
}

fn kind(fd: &OwnedFd) -> Result<FileType, Errno> {
    rustix::fs::fstat(fd).map(|st| FileType::from_raw_mode(st.st_mode))
}

fn copy_file(
    fd: OwnedFd,
    rel: &str,
    target: &Path,
    report: &mut CopyReport,
) -> Result<(), ArtifactError> {
    // The file was opened O_NONBLOCK (so a fifo could not hang us); regular
    // files ignore it, but clear it anyway for a plain blocking copy.
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(|e| ArtifactError::Read {
        path: rel.into(),
        source: e.into(),
    })?;
    // Keep the permission bits (an executable stays executable), never
    // setuid, setgid or sticky.
    let mode = rustix::fs::fstat(&fd)
        .map(|st| st.st_mode & 0o777)
        .map_err(|e| ArtifactError::Read {
            path: rel.into(),
            source: e.into(),
        })?;
    let mut src = fs::File::from(fd);
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(target)
        .map_err(|source| ArtifactError::Write {
            path: target.to_path_buf(),
            source,
        })?;
    let n = io::copy(&mut src, &mut dst).map_err(|source| ArtifactError::Read {
        path: rel.into(),
        source,
    })?;
    report.files += 1;
    report.bytes += n;
    Ok(())
}

fn copy_dir(
    fd: OwnedFd,
    rel: &str,
    target: &Path,
    depth: usize,
    entries: &mut usize,
    report: &mut CopyReport,
) -> Result<(), ArtifactError> {
    let read_err = |e: Errno| ArtifactError::Read {
        path: rel.into(),
        source: e.into(),
    };
    fs::create_dir_all(target).map_err(|source| ArtifactError::Write {
        path: target.to_path_buf(),
        source,
    })?;
    if depth >= MAX_DEPTH {
        report
            .skipped
            .push(format!("{rel}: nested deeper than {MAX_DEPTH}"));
        return Ok(());
    }
    let mut dir = Dir::read_from(&fd).map_err(read_err)?;
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        let name_bytes = name.to_bytes();
        if name_bytes == b"." || name_bytes == b".." {
            continue;
        }
        *entries += 1;
        if *entries > MAX_ENTRIES {
            return Err(ArtifactError::TooMany);
        }
        let name_str = String::from_utf8_lossy(name_bytes).into_owned();
        let child_rel = format!("{rel}/{name_str}");
        // One path component, O_NOFOLLOW: a symlink fails with ELOOP.
        let child = match openat(
            fd.as_fd(),
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(child) => child,
            Err(Errno::LOOP) => {
                report.skipped.push(format!("{child_rel}: symlink"));
                continue;
            }
            Err(Errno::NXIO) | Err(Errno::NOENT) => {
                report.skipped.push(format!("{child_rel}: not openable"));
                continue;
            }
            Err(e) => return Err(read_err(e)),
        };
        let child_target = target.join(&name_str);
        match kind(&child).map_err(read_err)? {
            FileType::RegularFile => copy_file(child, &child_rel, &child_target, report)?,
            FileType::Directory => {
                copy_dir(child, &child_rel, &child_target, depth + 1, entries, report)?;
            }
            _ => report.skipped.push(format!("{child_rel}: special file")),
        }
    }
    Ok(())
}
