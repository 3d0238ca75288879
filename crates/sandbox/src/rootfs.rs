//! The job's file system, built by the init inside its own mount namespace.
//!
//! Built in two phases: [`prepare`] (everything that does not depend on the
//! job, done ahead of time by a spare sandbox) and [`finish`] (the job's
//! source, workspace, host name, then the final pivot). Order (after
//! Firecracker's jailer and bubblewrap):
//! 1. make every mount private (`MS_PRIVATE|MS_REC`), so nothing propagates
//!    back to the host;
//! 2. mount a scratch tmpfs on `/tmp` and `pivot_root` into it; the host's
//!    tree is now reachable only under `/oldroot`;
//! 3. build the job's root in a fresh tmpfs at `/newroot`: host `/usr`
//!    read-only (plus the merged-usr links), a minimal generated `/etc` with a
//!    few read-only host files, the source read-only at `/src`, tmpfs
//!    workspace and `/tmp`, fresh `/proc`, a minimal `/dev`;
//! 4. make the new root read-only, `pivot_root` into it and detach the old
//!    root and the scratch tmpfs (`MNT_DETACH`).
//!
//! Every mount is `nosuid,nodev` except the device-node binds in `/dev`.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::mount::{
    mount, mount_bind_recursive, mount_change, unmount, MountFlags, MountPropagationFlags,
    UnmountFlags,
};

use crate::config::{Layers, SandboxConfig};

/// Where setup failed and why; sent back to the runner as text.
#[derive(Debug)]
pub(crate) struct SetupError {
    pub stage: String,
    pub error: String,
}

type Result<T> = std::result::Result<T, SetupError>;

fn fail(stage: impl Into<String>, error: impl std::fmt::Display) -> SetupError {
    SetupError {
        stage: stage.into(),
        error: error.to_string(),
    }
}

/// Host paths under `/etc` the job sees read-only, each with the reason.
/// Everything else in `/etc` is generated; the host's own files (shadow,
/// machine-id, ssh keys, ...) are never visible.
const HOST_ETC: &[(&str, &str)] = &[
    (
        "alternatives",
        "Debian alternatives: cc, awk, editor, ... resolve through it",
    ),
    (
        "ld.so.cache",
        "the dynamic loader finds libraries through it",
    ),
    ("localtime", "local time zone for logs and date"),
    ("os-release", "tools that identify the distribution"),
    ("ssl", "CA certificates for TLS clients"),
    ("ca-certificates", "CA certificates for TLS clients"),
];

/// Host device nodes bound into the job's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Top-level host entries that are links into `/usr` on merged-usr systems
/// and directories elsewhere; either way the job sees them read-only.
const USR_LINKS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

const SCRATCH: &str = "/tmp";
const OLD: &str = "/oldroot";
const NEW: &str = "/newroot";

/// Where the host's tree is, under the scratch root, while the init builds
/// the job's root (the runner opens the job's source through it).
pub(crate) const HOST_TREE: &str = OLD;

/// Builds the job-independent part of the root: private mounts, the scratch
/// pivot, host `/usr`, the generic `/etc`, `/run`, `/proc` (masked if
/// asked), `/dev`, and the loopback interface. A spare sandbox does this
/// before any job claims it.
pub(crate) fn prepare(layers: &Layers) -> Result<()> {
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| fail("make mounts private", e))?;

    tmpfs(
        SCRATCH,
        "mode=0700,size=1m",
        MountFlags::NOSUID | MountFlags::NODEV,
    )?;
    mkdir(&format!("{SCRATCH}{OLD}"), 0o700)?;
    rustix::process::pivot_root(SCRATCH, format!("{SCRATCH}{OLD}").as_str())
        .map_err(|e| fail("pivot_root into the scratch tmpfs", e))?;
    rustix::process::chdir("/").map_err(|e| fail("chdir /", e))?;

    mkdir(NEW, 0o755)?;
    tmpfs(
        NEW,
        "mode=0755,size=4m",
        MountFlags::NOSUID | MountFlags::NODEV,
    )?;

    usr()?;
    etc()?;
    run_dirs()?;
    proc()?;
    if layers.proc_masking {
        mask_proc()?;
    }
    dev()?;
    crate::netns::loopback_up().map_err(|e| fail("bring up the loopback interface", e))
}

/// Where a job registers values to mask (see [`mask_channel`]).
pub const MASK_PATH: &str = "/run/airlock/mask";

/// Adds what is specific to the job (host name, source, workspace and
/// `/tmp` sizes, the mask channel), makes the root read-only and pivots
/// into it. Returns the read end of the mask channel, for the runner.
pub(crate) fn finish(
    config: &SandboxConfig,
    source_dir: BorrowedFd<'_>,
    secrets: &[(&str, OwnedFd)],
) -> Result<OwnedFd> {
    hostname(&config.hostname)?;
    if config.egress {
        let dns = crate::netns::DNS_ADDR.ip();
        write_etc(&[(
            "resolv.conf",
            &format!(
                "# airlock: the job's DNS responder (allowlisted names only)\nnameserver {dns}\n"
            ),
        )])?;
    }
    source(source_dir)?;
    if !secrets.is_empty() {
        secret_files(secrets)?;
    }
    let mask = mask_channel()?;
    scratch_dirs(config)?;

    // The root tmpfs itself is read-only from now on; the writable places
    // are their own mounts.
    set_attr(NEW, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV, false)?;
    rustix::process::chdir(NEW).map_err(|e| fail("chdir into the new root", e))?;
    rustix::process::pivot_root(".", ".").map_err(|e| fail("pivot_root into the new root", e))?;
    // The old root (the scratch tmpfs with the host tree under it) is now
    // stacked on "/"; detaching it leaves only the job's tree.
    unmount(".", UnmountFlags::DETACH).map_err(|e| fail("detach the old root", e))?;
    rustix::process::chdir("/").map_err(|e| fail("chdir /", e))?;
    Ok(mask)
}

/// The mask channel: a FIFO at [`MASK_PATH`] that the job may only write
/// (mode 0200; Landlock grants write on this one file under the otherwise
/// read-only `/run`). Each line written to it is a value the runner masks
/// from then on. Opened here for reading, without blocking (no writer yet),
/// and handed to the runner, which reads it before every chunk of output:
/// a value registered before it is printed is always masked. Values never
/// pass through the job's output, so registering one cannot echo it.
fn mask_channel() -> Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let dir = format!("{NEW}/run/airlock");
    mkdir(&dir, 0o755)?;
    let fifo = format!("{NEW}{MASK_PATH}");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fifo.as_str(),
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o200),
        0,
    )
    .map_err(|e| fail(format!("mkfifo {MASK_PATH}"), e))?;
    // The umask (022) leaves 0200 as it is.
    rustix::fs::open(
        fifo.as_str(),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("open {MASK_PATH}"), e))
}

fn usr() -> Result<()> {
    mkdir(&format!("{NEW}/usr"), 0o755)?;
    bind_ro(&format!("{OLD}/usr"), &format!("{NEW}/usr"), true)?;
    for name in USR_LINKS {
        let host = PathBuf::from(format!("{OLD}/{name}"));
        let Ok(meta) = fs::symlink_metadata(&host) else {
            continue;
        };
        let target = PathBuf::from(format!("{NEW}/{name}"));
        if meta.file_type().is_symlink() {
            let link = fs::read_link(&host).map_err(|e| fail(format!("readlink /{name}"), e))?;
            symlink(&link, &target).map_err(|e| fail(format!("symlink /{name}"), e))?;
        } else if meta.is_dir() {
            mkdir(&target.to_string_lossy(), 0o755)?;
            bind_ro(&host.to_string_lossy(), &target.to_string_lossy(), true)?;
        }
    }
    Ok(())
}

/// Writes the generated files of `/etc` (0644 under the init's umask).
fn write_etc(files: &[(&str, &str)]) -> Result<()> {
    for (name, content) in files {
        let path = format!("{NEW}/etc/{name}");
        fs::write(&path, content).map_err(|e| fail(format!("write /etc/{name}"), e))?;
    }
    Ok(())
}

fn hostname(name: &str) -> Result<()> {
    rustix::system::sethostname(name.as_bytes()).map_err(|e| fail("set the host name", e))?;
    write_etc(&[
        (
            "hosts",
            &format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{name}\n"),
        ),
        ("hostname", &format!("{name}\n")),
    ])
}

fn etc() -> Result<()> {
    let etc = format!("{NEW}/etc");
    mkdir(&etc, 0o755)?;
    write_etc(&[
        (
            "passwd",
            "root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        ),
        ("group", "root:x:0:\nnogroup:x:65534:\n"),
        ("resolv.conf", "# airlock: this job has no DNS (network: none)\n"),
        ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"),
    ])?;
    for (name, _why) in HOST_ETC {
        let host = format!("{OLD}/etc/{name}");
        let target = format!("{etc}/{name}");
        let Ok(meta) = fs::symlink_metadata(&host) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let link =
                fs::read_link(&host).map_err(|e| fail(format!("readlink /etc/{name}"), e))?;
            symlink(&link, &target).map_err(|e| fail(format!("symlink /etc/{name}"), e))?;
        } else if meta.is_dir() {
            mkdir(&target, 0o755)?;
            bind_ro(&host, &target, true)?;
        } else if meta.is_file() {
            touch(&target)?;
            bind_ro(&host, &target, false)?;
        }
    }
    Ok(())
}

/// Binds the job's source, which the runner opened for us: the init runs
/// as the job's unprivileged host identity and may not be able to walk the
/// path itself (a source under root's 0700 home, say), while the runner can.
/// The fd names a directory of this mount namespace (the runner opened it
/// through `/proc/INIT/root/oldroot/...`), and the bind goes through its
/// `/proc/self/fd` link.
fn source(source: BorrowedFd<'_>) -> Result<()> {
    let target = format!("{NEW}/src");
    mkdir(&target, 0o755)?;
    let link = format!("{NEW}/proc/self/fd/{}", source.as_raw_fd());
    mount_bind_recursive(link.as_str(), target.as_str())
        .map_err(|e| fail("bind the source on /src", e))?;
    set_attr(&target, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV, true)
}

/// `/run/secrets`: its own tmpfs (in memory, noexec, nosuid, nodev), one
/// file per secret, mode 0400 (the job's root owns it but, without
/// capabilities, can only read it), then read-only. Gone with the job's
/// mount namespace.
fn secret_files(secrets: &[(&str, OwnedFd)]) -> Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let dir = format!("{NEW}/run/secrets");
    mkdir(&dir, 0o500)?;
    tmpfs(
        &dir,
        "mode=0500,size=8m",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
    )?;
    for (name, fd) in secrets {
        if !crate::config::valid_secret_name(name) {
            return Err(fail("secrets", format!("invalid secret name {name:?}")));
        }
        let size = rustix::fs::fstat(fd)
            .map_err(|e| fail(format!("secret {name}"), e))?
            .st_size;
        let size = usize::try_from(size).map_err(|e| fail(format!("secret {name}"), e))?;
        let mut value = zeroize::Zeroizing::new(vec![0u8; size]);
        let memfd = fs::File::from(
            fd.try_clone()
                .map_err(|e| fail(format!("secret {name}"), e))?,
        );
        memfd
            .read_exact_at(&mut value, 0)
            .map_err(|e| fail(format!("read secret {name}"), e))?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(format!("{dir}/{name}"))
            .map_err(|e| fail(format!("create /run/secrets/{name}"), e))?;
        std::io::Write::write_all(&mut file, &value)
            .map_err(|e| fail(format!("write /run/secrets/{name}"), e))?;
    }
    set_attr(&dir, ATTR_RDONLY, false)
}

fn scratch_dirs(config: &SandboxConfig) -> Result<()> {
    let flags = MountFlags::NOSUID | MountFlags::NODEV;
    let workdir = format!("{NEW}{}", config.workdir);
    mkdir_all(&workdir)?;
    tmpfs(
        &workdir,
        &format!("mode=0755,size={}", config.workspace_size),
        flags,
    )?;
    let tmp = format!("{NEW}/tmp");
    mkdir(&tmp, 0o1777)?;
    tmpfs(&tmp, &format!("mode=1777,size={}", config.tmp_size), flags)
}

fn run_dirs() -> Result<()> {
    let run = format!("{NEW}/run");
    mkdir(&run, 0o755)?;
    tmpfs(
        &run,
        "mode=0755,size=1m",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
    )?;
    mkdir(&format!("{NEW}/var"), 0o755)?;
    symlink("/tmp", format!("{NEW}/var/tmp")).map_err(|e| fail("symlink /var/tmp", e))
}

fn proc() -> Result<()> {
    let target = format!("{NEW}/proc");
    mkdir(&target, 0o555)?;
    mount(
        "proc",
        target.as_str(),
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(|e| fail("mount /proc", e))
}

/// `/proc` files that leak host or kernel state, covered with `/dev/null`
/// (after Docker's and runc's masked paths, plus the kernel symbol table
/// and log).
const PROC_MASKED_FILES: &[&str] = &[
    "kcore",
    "keys",
    "key-users",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "kallsyms",
    "kmsg",
    "sysrq-trigger",
    "config.gz",
    "modules",
    "vmallocinfo",
    "slabinfo",
];

/// `/proc` directories with hardware details, covered with an empty
/// read-only tmpfs.
const PROC_MASKED_DIRS: &[&str] = &["acpi", "asound", "scsi", "driver"];

/// `/proc` trees that stay readable but become read-only.
const PROC_READ_ONLY: &[&str] = &["sys", "bus", "fs", "irq"];

/// Where the masks come from: a read-only tmpfs (in the scratch root, never
/// visible to the job) holding an empty file and an empty directory, both
/// mode 0000. A bind mount inherits its source's flags, so each mask is one
/// `mount` call and comes out read-only, nosuid, nodev and noexec; with no
/// capabilities, even the job's root cannot open it (EACCES).
const MASKS: &str = "/masks";

fn mask_proc() -> Result<()> {
    mkdir(MASKS, 0o700)?;
    tmpfs(
        MASKS,
        "mode=0700,size=4k",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
    )?;
    let (file, dir) = (format!("{MASKS}/file"), format!("{MASKS}/dir"));
    fs::File::create(&file).map_err(|e| fail("create the mask file", e))?;
    fs::set_permissions(&file, fs::Permissions::from_mode(0o000))
        .map_err(|e| fail("chmod the mask file", e))?;
    mkdir(&dir, 0o000)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o000))
        .map_err(|e| fail("chmod the mask directory", e))?;
    set_attr(MASKS, ATTR_RDONLY, false)?;
    for (names, source) in [(PROC_MASKED_FILES, &file), (PROC_MASKED_DIRS, &dir)] {
        for name in names {
            let target = format!("{NEW}/proc/{name}");
            match rustix::mount::mount_bind(source.as_str(), target.as_str()) {
                // Absent on this kernel: nothing to mask.
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(fail(format!("mask /proc/{name}"), e)),
            }
        }
    }
    for name in PROC_READ_ONLY {
        let target = format!("{NEW}/proc/{name}");
        if Path::new(&target).exists() {
            bind_ro(&target, &target, true)?;
        }
    }
    Ok(())
}

fn dev() -> Result<()> {
    let dev = format!("{NEW}/dev");
    mkdir(&dev, 0o755)?;
    tmpfs(
        &dev,
        "mode=0755,size=64k",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
    )?;
    for name in DEVICES {
        let target = format!("{dev}/{name}");
        touch(&target)?;
        let host = format!("{OLD}/dev/{name}");
        rustix::mount::mount_bind(host.as_str(), target.as_str())
            .map_err(|e| fail(format!("bind /dev/{name}"), e))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        symlink(target, format!("{dev}/{name}"))
            .map_err(|e| fail(format!("symlink /dev/{name}"), e))?;
    }
    let pts = format!("{dev}/pts");
    mkdir(&pts, 0o755)?;
    mount(
        "devpts",
        pts.as_str(),
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        c"newinstance,ptmxmode=0666,mode=620",
    )
    .map_err(|e| fail("mount /dev/pts", e))?;
    let shm = format!("{dev}/shm");
    mkdir(&shm, 0o1777)?;
    tmpfs(
        &shm,
        "mode=1777,size=64m",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
    )?;
    // nosuid and noexec on the device binds (and everything else in /dev)
    // in one call.
    set_attr(&dev, ATTR_NOSUID | ATTR_NOEXEC, true)
}

fn tmpfs(target: &str, options: &str, flags: MountFlags) -> Result<()> {
    let data = CString::new(options).map_err(|e| fail(format!("tmpfs options for {target}"), e))?;
    mount("tmpfs", target, "tmpfs", flags, data.as_c_str())
        .map_err(|e| fail(format!("mount tmpfs on {}", shown(target)), e))
}

/// Binds `host` onto `target` and makes the bind read-only, nosuid, nodev
/// (recursively for directories, so submounts are covered too).
fn bind_ro(host: &str, target: &str, recursive: bool) -> Result<()> {
    if recursive {
        mount_bind_recursive(host, target)
    } else {
        rustix::mount::mount_bind(host, target)
    }
    .map_err(|e| fail(format!("bind {} on {}", shown(host), shown(target)), e))?;
    set_attr(target, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV, recursive)
}

const ATTR_RDONLY: u64 = 0x1;
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const ATTR_NOEXEC: u64 = 0x8;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets mount attributes with mount_setattr(2) (Linux 5.12): unlike a
/// remount it keeps the flags the kernel locked for our user namespace and
/// can cover a whole subtree at once.
fn set_attr(target: &str, set: u64, recursive: bool) -> Result<()> {
    let path = CString::new(target).map_err(|e| fail(format!("path {target}"), e))?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: path is a NUL-terminated string and attr a properly sized
    // struct mount_attr, both alive for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(fail(
            format!("set mount attributes on {}", shown(target)),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Creates a directory (mode filtered by the init's umask, 022).
fn mkdir(path: &str, mode: u32) -> Result<()> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(fail(format!("mkdir {}", shown(path)), e)),
    }
}

fn mkdir_all(path: &str) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| fail(format!("mkdir {}", shown(path)), e))
}

fn touch(path: &str) -> Result<()> {
    fs::File::create(path)
        .map(drop)
        .map_err(|e| fail(format!("create {}", shown(path)), e))
}

/// A path as the job will see it (or the host path, under /oldroot).
fn shown(path: &str) -> String {
    let p = Path::new(path);
    if let Ok(rest) = p.strip_prefix(NEW) {
        return format!("/{}", String::from_utf8_lossy(rest.as_os_str().as_bytes()));
    }
    if let Ok(rest) = p.strip_prefix(OLD) {
        return format!(
            "host:/{}",
            String::from_utf8_lossy(rest.as_os_str().as_bytes())
        );
    }
    path.to_string()
}
