//! Reading a job's processes from the host's `/proc`, for the exec watch
//! ([`crate::procwatch`]) and containment ([`crate::contain`]): whether a
//! process is in the job's pid namespace, and what the job would see of
//! it (its pid, parent, uid, executable and command line).
//!
//! Everything goes through one open `/proc` directory and `*at` calls on
//! paths formatted on the stack, into buffers reused from call to call:
//! the exec watch looks at every exec of the host, and most are not the
//! job's.
//!
//! What the host sees, and what is reported instead:
//! - `status` gives the pid in every namespace (`NSpid`, the job's last),
//!   but the parent (`PPid`) and uids in the host's: the parent is mapped
//!   through its own `NSpid`, uids through the job's `uid_map`.
//! - `exe` of a job process reads as the job sees it: the kernel resolves
//!   the link in the job's mount namespace, whose root is the job's root
//!   after `pivot_root`. Only the init's reads as a host path (its binary
//!   was executed before the pivot, from a mount now detached); it is
//!   reported as [`INIT_ARGV0`](crate::INIT_ARGV0). Should a job's root
//!   ever not be its namespace's root, the host path of the root
//!   (`/proc/INIT/root`) is stripped.

use std::ffi::CStr;
use std::io::{self, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{openat, readlinkat_raw, statat, AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// A namespace's identity: the device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NsId {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

/// The init pid and user namespaces have fixed inode numbers
/// (`PROC_PID_INIT_INO`, `PROC_USER_INIT_INO` in the kernel).
pub(crate) const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;
/// See [`INIT_PID_NS_INO`].
pub(crate) const INIT_USER_NS_INO: u64 = 0xEFFF_FFFD;

/// The most of a command line read (a job can pass megabytes of
/// arguments; the kernel's own limit is a quarter of the stack limit).
pub(crate) const MAX_CMDLINE: usize = 4 << 20;

/// `/proc`, open for `*at` calls.
#[derive(Debug)]
pub(crate) struct Proc {
    fd: OwnedFd,
}

/// What looking a pid up found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The process, in the namespace asked for: its `/proc/PID` directory.
    Ours(OwnedFd),
    /// A process in another namespace.
    Foreign,
    /// No such process (any more).
    Gone,
}

impl Proc {
    pub(crate) fn open() -> io::Result<Proc> {
        let fd = rustix::fs::open(
            "/proc",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Proc { fd })
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether host pid `pid` is in the pid namespace `ns` (one `stat`).
    pub(crate) fn in_ns(&self, pid: i32, ns: NsId) -> Option<bool> {
        let mut buf = [0u8; 32];
        let path = pid_path(&mut buf, pid, &"/ns/pid");
        match statat(&self.fd, path, AtFlags::empty()) {
            Ok(st) => Some(st.st_dev == ns.dev && st.st_ino == ns.ino),
            Err(_) => None,
        }
    }

    /// Opens `/proc/PID` if that process is in `ns`. Reads through the
    /// directory then fail rather than see another process, should the
    /// pid be reused meanwhile.
    pub(crate) fn lookup(&self, pid: i32, ns: NsId) -> Lookup {
        let mut buf = [0u8; 32];
        let path = pid_path(&mut buf, pid, &"");
        let dir = match openat(
            &self.fd,
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(dir) => dir,
            Err(_) => return Lookup::Gone,
        };
        match statat(&dir, c"ns/pid", AtFlags::empty()) {
            Ok(st) if st.st_dev == ns.dev && st.st_ino == ns.ino => Lookup::Ours(dir),
            Ok(_) => Lookup::Foreign,
            Err(_) => Lookup::Gone,
        }
    }
}

impl Proc {
    /// Opens `/proc/PID`, whatever namespace the process is in.
    pub(crate) fn open_pid(&self, pid: i32) -> Option<OwnedFd> {
        let mut buf = [0u8; 32];
        openat(
            &self.fd,
            pid_path(&mut buf, pid, &""),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
    }
}

/// The identity of the namespace at `path` (`/proc/PID/ns/NAME`).
pub(crate) fn ns_id(dir: BorrowedFd<'_>, path: &CStr) -> io::Result<NsId> {
    let st = statat(dir, path, AtFlags::empty())?;
    Ok(NsId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// `PID` followed by `rest`, NUL-terminated, in `buf`.
pub(crate) fn pid_path<'a>(
    buf: &'a mut [u8; 32],
    pid: i32,
    rest: &dyn std::fmt::Display,
) -> &'a CStr {
    let mut cursor = io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{pid}{rest}\0");
    CStr::from_bytes_until_nul(&buf[..]).unwrap_or(c"")
}

/// Where a process's `/proc` files are: in its `/proc/PID` directory (which
/// stays that process's, whatever happens to its pid), or under `/proc` by
/// its pid (a system call less per file; for a process just seen, whose pid
/// cannot have been reused within microseconds).
#[derive(Debug, Clone, Copy)]
pub(crate) enum At<'a> {
    /// Its `/proc/PID` directory.
    Dir(BorrowedFd<'a>),
    /// `/proc`, and the pid.
    Pid(BorrowedFd<'a>, i32),
}

impl At<'_> {
    /// The directory and the path of its file `name` relative to it.
    fn file<'b>(&self, buf: &'b mut [u8; 32], name: &str) -> (BorrowedFd<'_>, &'b CStr) {
        match *self {
            At::Dir(dir) => {
                let mut cursor = io::Cursor::new(&mut buf[..]);
                let _ = write!(cursor, "{name}\0");
                (dir, CStr::from_bytes_until_nul(&buf[..]).unwrap_or(c""))
            }
            At::Pid(proc, pid) => (proc, pid_path(buf, pid, &format_args!("/{name}"))),
        }
    }
}

/// Buffers for reading `/proc` files, reused from call to call.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    file: Vec<u8>,
    link: Vec<u8>,
}

impl Reader {
    /// Reads the file `name` of a process (at most `limit` bytes).
    ///
    /// A read that returns less than asked is the end: `/proc` files are
    /// generated whole (`status`) or copied until the end or the count
    /// (`cmdline`), so the read that would return 0 is saved.
    pub(crate) fn read(&mut self, at: At<'_>, name: &str, limit: usize) -> io::Result<&[u8]> {
        self.file.clear();
        let mut buf = [0u8; 32];
        let (dir, path) = at.file(&mut buf, name);
        let fd = openat(dir, path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        while self.file.len() < limit {
            self.file.reserve(4096);
            let room = self.file.capacity() - self.file.len();
            match rustix::io::read(&fd, rustix::buffer::spare_capacity(&mut self.file)) {
                Ok(n) if n < room => break,
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        self.file.truncate(limit);
        Ok(&self.file)
    }

    /// Reads the symlink `name` of a process.
    pub(crate) fn link(&mut self, at: At<'_>, name: &str) -> io::Result<&[u8]> {
        self.link.clear();
        // A path read from the kernel is at most a page long.
        self.link.reserve(4097);
        let mut buf = [0u8; 32];
        let (dir, path) = at.file(&mut buf, name);
        readlinkat_raw(dir, path, rustix::buffer::spare_capacity(&mut self.link))?;
        Ok(&self.link)
    }

    /// What the job sees of the process whose `/proc/PID` is `dir`: its
    /// status, and with `full` also its executable and command line.
    /// `None` once the process is gone (a zombie's status still reads).
    ///
    /// The executable and command line are read first: they are gone as
    /// soon as the process exits, its status only once it is reaped.
    pub(crate) fn process(&mut self, at: At<'_>, job: &JobView, full: bool) -> Option<Seen> {
        let (exe, argv) = if full {
            let exe = self.link(at, "exe").ok().map(|l| job_path(l, &job.root));
            let argv = self
                .read(at, "cmdline", MAX_CMDLINE)
                .map(split_argv)
                .unwrap_or_default();
            (exe, argv)
        } else {
            (None, Vec::new())
        };
        let status = Status::parse(self.read(at, "status", 64 * 1024).ok()?);
        let path = if status.ns_pid == 1 {
            Some(crate::INIT_ARGV0.to_string())
        } else {
            exe
        };
        Some(Seen {
            pid: status.ns_pid,
            host_ppid: status.ppid,
            uid: status.euid.map_or(u32::MAX, |u| job.uid_map.inside(u)),
            name: String::from_utf8_lossy(status.name).into_owned(),
            state: char::from(status.state),
            rss_bytes: status.rss_kib.saturating_mul(1024),
            path: path.filter(|_| full),
            argv,
        })
    }

    /// The executable of `dir`'s process as the job sees it.
    pub(crate) fn exe(&mut self, at: At<'_>, job: &JobView, pid: i32) -> Option<String> {
        if pid == 1 {
            return Some(crate::INIT_ARGV0.to_string());
        }
        let link = self.link(at, "exe").ok()?;
        Some(job_path(link, &job.root))
    }
}

/// What is needed to show a process as its job sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobView {
    /// The job's `uid_map`, as the runner reads it.
    pub(crate) uid_map: UidMap,
    /// The job's root as the host names it (`/proc/INIT/root`); `/` when
    /// it is the root of the job's mount namespace.
    pub(crate) root: Vec<u8>,
}

impl JobView {
    /// Reads them from the job's init, `/proc/INIT` being `dir`.
    pub(crate) fn of_init(dir: BorrowedFd<'_>) -> io::Result<JobView> {
        let mut reader = Reader::default();
        let uid_map = UidMap::parse(reader.read(At::Dir(dir), "uid_map", 64 * 1024)?);
        let root = reader.link(At::Dir(dir), "root")?.to_vec();
        Ok(JobView { uid_map, root })
    }
}

/// A process as the job sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Its pid in the job's namespace (0 if unknown).
    pub(crate) pid: i32,
    /// Its parent's pid in the host's namespace (0 if unknown).
    pub(crate) host_ppid: i32,
    /// Its effective uid inside the job (`u32::MAX` if unknown).
    pub(crate) uid: u32,
    /// Its command name (`comm`, at most 15 bytes).
    pub(crate) name: String,
    /// Its state letter (`R`, `S`, `D`, `T`, `Z`, ...; `?` if unknown).
    pub(crate) state: char,
    /// Its resident memory.
    pub(crate) rss_bytes: u64,
    /// Its executable's path (only when read in full, and readable).
    pub(crate) path: Option<String>,
    /// Its command line (only when read in full).
    pub(crate) argv: Vec<Vec<u8>>,
}

/// The fields of `/proc/PID/status` that are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) state: u8,
    /// Host view.
    pub(crate) ppid: i32,
    /// Effective uid, in the reader's user namespace.
    pub(crate) euid: Option<u32>,
    /// The last `NSpid` field: the pid in the innermost namespace.
    pub(crate) ns_pid: i32,
    pub(crate) rss_kib: u64,
}

impl<'a> Status<'a> {
    pub(crate) fn parse(text: &'a [u8]) -> Status<'a> {
        let mut s = Status {
            name: b"",
            state: b'?',
            ppid: 0,
            euid: None,
            ns_pid: 0,
            rss_kib: 0,
        };
        for line in text.split(|&b| b == b'\n') {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (key, value) = (&line[..colon], trim(&line[colon + 1..]));
            let mut fields = value
                .split(|b| b.is_ascii_whitespace())
                .filter(|f| !f.is_empty());
            match key {
                b"Name" => s.name = value,
                b"State" => s.state = value.first().copied().unwrap_or(b'?'),
                b"PPid" => s.ppid = fields.next().and_then(number).unwrap_or(0),
                b"Uid" => s.euid = fields.nth(1).and_then(number),
                b"NSpid" => s.ns_pid = fields.next_back().and_then(number).unwrap_or(0),
                b"VmRSS" => s.rss_kib = fields.next().and_then(number).unwrap_or(0),
                _ => {}
            }
        }
        s
    }
}

/// The fields of `/proc/PID/stat` that are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat<'a> {
    pub(crate) comm: &'a [u8],
    pub(crate) state: u8,
    /// Clock ticks after boot.
    pub(crate) start_ticks: u64,
}

impl<'a> Stat<'a> {
    /// `PID (COMM) S PPID ...`: the command name may hold spaces and
    /// parentheses, so the fields start after the last `)`.
    pub(crate) fn parse(text: &'a [u8]) -> Option<Stat<'a>> {
        let open = text.iter().position(|&b| b == b'(')?;
        let close = text.iter().rposition(|&b| b == b')')?;
        let comm = text.get(open + 1..close)?;
        let mut fields = text
            .get(close + 1..)?
            .split(|&b| b == b' ')
            .filter(|f| !f.is_empty());
        let state = *fields.next()?.first()?;
        // starttime is field 22; state was field 3.
        let start_ticks = fields.nth(18).and_then(number)?;
        Some(Stat {
            comm,
            state,
            start_ticks,
        })
    }
}

/// A user namespace's `uid_map`: (inside, outside, count) ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UidMap(Vec<(u32, u32, u32)>);

/// What an unmapped uid shows as (`/proc/sys/kernel/overflowuid`).
pub(crate) const OVERFLOW_UID: u32 = 65534;

impl UidMap {
    pub(crate) fn parse(text: &[u8]) -> UidMap {
        let ranges = text
            .split(|&b| b == b'\n')
            .filter_map(|line| {
                let mut f = line
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|f| !f.is_empty())
                    .map(number::<u32>);
                Some((f.next()??, f.next()??, f.next()??))
            })
            .collect();
        UidMap(ranges)
    }

    /// The uid inside the namespace of `outside`, a uid as the reader of
    /// the map sees it.
    pub(crate) fn inside(&self, outside: u32) -> u32 {
        self.0
            .iter()
            .find_map(|&(inside, start, count)| {
                let offset = outside.checked_sub(start)?;
                (offset < count)
                    .then(|| inside.checked_add(offset))
                    .flatten()
            })
            .unwrap_or(OVERFLOW_UID)
    }
}

/// A command line's arguments (each ends with a NUL; a process that
/// rewrote its command line may leave the last one without).
pub(crate) fn split_argv(cmdline: &[u8]) -> Vec<Vec<u8>> {
    let body = cmdline.strip_suffix(b"\0").unwrap_or(cmdline);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

/// `link` (an executable's path as the host read it) as the job sees it:
/// without the job root's host path `root` in front.
pub(crate) fn job_path(link: &[u8], root: &[u8]) -> String {
    let inside = match root {
        b"" | b"/" => link,
        root => match link.strip_prefix(root) {
            Some(rest) if rest.first() == Some(&b'/') => rest,
            Some(b"") => b"/",
            _ => link,
        },
    };
    String::from_utf8_lossy(inside).into_owned()
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    b.get(start..end).unwrap_or_default()
}

fn number<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &[u8] = b"Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t25553\n\
        Ngid:\t0\nPid:\t25553\nPPid:\t25552\nTracerPid:\t0\n\
        Uid:\t1879048192\t1879048193\t1879048192\t1879048192\n\
        Gid:\t1879048192\t1879048192\t1879048192\t1879048192\n\
        NStgid:\t25553\t3\nNSpid:\t25553\t3\nNSpgid:\t25552\t2\n\
        VmPeak:\t    8200 kB\nVmRSS:\t     1792 kB\nThreads:\t1\n";

    #[test]
    fn status_gives_the_innermost_pid_the_effective_uid_and_rss() {
        let s = Status::parse(STATUS);
        assert_eq!(s.name, b"sleep");
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 25552);
        assert_eq!(s.euid, Some(1_879_048_193));
        assert_eq!(s.ns_pid, 3);
        assert_eq!(s.rss_kib, 1792);
        // A zombie: no memory lines; a kernel without NSpid: pid unknown.
        let z = Status::parse(b"Name:\tsh\nState:\tZ (zombie)\nPPid:\t1\n");
        assert_eq!((z.state, z.ns_pid, z.rss_kib, z.euid), (b'Z', 0, 0, None));
        assert_eq!(Status::parse(b"").name, b"");
    }

    #[test]
    fn stat_survives_parentheses_and_spaces_in_the_name() {
        let text = b"4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
            987654 8200000 448 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        let s = Stat::parse(text).expect("parses");
        assert_eq!(s.comm, b"a) b (c");
        assert_eq!(s.state, b'S');
        assert_eq!(s.start_ticks, 987_654);
        assert_eq!(Stat::parse(b"12 (x) S 1"), None);
    }

    #[test]
    fn uids_map_through_the_ranges() {
        let map =
            UidMap::parse(b"         0 1879048192          1\n      1000     100000      10\n");
        assert_eq!(map.inside(1_879_048_192), 0);
        assert_eq!(map.inside(100_005), 1005);
        assert_eq!(map.inside(100_010), OVERFLOW_UID);
        assert_eq!(map.inside(0), OVERFLOW_UID);
        // The identity map of the initial namespace.
        let init = UidMap::parse(b"         0          0 4294967295\n");
        assert_eq!(init.inside(1234), 1234);
    }

    #[test]
    fn argv_splits_on_nul() {
        assert_eq!(
            split_argv(b"sh\0-c\0echo hi\0"),
            [&b"sh"[..], b"-c", b"echo hi"]
        );
        assert_eq!(split_argv(b"sh\0\0x\0"), [&b"sh"[..], b"", b"x"]);
        assert_eq!(split_argv(b"rewritten title"), [&b"rewritten title"[..]]);
        assert!(split_argv(b"").is_empty());
    }

    #[test]
    fn paths_lose_the_host_path_of_the_jobs_root() {
        assert_eq!(job_path(b"/usr/bin/true", b"/"), "/usr/bin/true");
        assert_eq!(
            job_path(
                b"/var/lib/airlock/root/usr/bin/true",
                b"/var/lib/airlock/root"
            ),
            "/usr/bin/true"
        );
        // Not under the root (another prefix sharing the first bytes).
        assert_eq!(
            job_path(b"/var/lib/airlock/rootx/t", b"/var/lib/airlock/root"),
            "/var/lib/airlock/rootx/t"
        );
        assert_eq!(
            job_path(b"/usr/bin/x (deleted)", b""),
            "/usr/bin/x (deleted)"
        );
    }

    #[test]
    fn pid_paths_are_formatted_in_place() {
        let mut buf = [0u8; 32];
        assert_eq!(pid_path(&mut buf, 4_194_304, &"/ns/pid"), c"4194304/ns/pid");
        assert_eq!(pid_path(&mut buf, 7, &""), c"7");
        // Too long for the buffer: empty, which no *at call accepts.
        assert_eq!(
            pid_path(&mut buf, 7, &"/a-name-much-longer-than-32-bytes"),
            c""
        );
    }

    #[test]
    fn this_process_is_in_its_own_namespace() {
        let proc = Proc::open().expect("/proc");
        let me = i32::try_from(std::process::id()).expect("pid");
        let ns = ns_id(proc.as_fd(), c"self/ns/pid").expect("ns");
        assert_eq!(proc.in_ns(me, ns), Some(true));
        let other = NsId {
            dev: ns.dev,
            ino: ns.ino + 1,
        };
        assert_eq!(proc.in_ns(me, other), Some(false));
        assert!(matches!(proc.lookup(me, ns), Lookup::Ours(_)));
        assert!(matches!(proc.lookup(me, other), Lookup::Foreign));
        assert!(matches!(proc.lookup(i32::MAX, ns), Lookup::Gone));
        let Lookup::Ours(dir) = proc.lookup(me, ns) else {
            return;
        };
        let mut reader = Reader::default();
        let seen = reader
            .process(At::Dir(dir.as_fd()), &JobView::default(), true)
            .expect("readable");
        let by_pid = reader
            .process(At::Pid(proc.as_fd(), me), &JobView::default(), true)
            .expect("readable");
        assert_eq!(by_pid.argv, seen.argv);
        assert_eq!(by_pid.path, seen.path);
        assert_eq!(
            seen.host_ppid,
            i32::try_from(std::os::unix::process::parent_id()).expect("ppid")
        );
        assert!(seen.argv.first().is_some_and(|a| !a.is_empty()));
        let exe = std::env::current_exe().expect("exe");
        assert_eq!(seen.path.as_deref(), exe.to_str());
    }
}
