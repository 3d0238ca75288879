//! cgroup v2: one directory per job under `airlock/` at the top of the
//! unified hierarchy (the root cgroup is exempt from the "no internal
//! processes" rule, so controllers can be enabled for `airlock/` whatever
//! cgroup the runner itself sits in).

use std::io;
use std::path::{Path, PathBuf};

use super::{
    counter, keyed, orphaned, read, read_optional, rmdir, wait_empty, wait_until, write, Cgroup,
    Events, Limits, Sample,
};

/// Controllers a job's cgroup needs.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Controllers enabled when available: they only account (`io.stat`).
const OPTIONAL: [&str; 1] = ["io"];

/// The `airlock` parent under a cgroup2 mount at `root`, with the needed
/// controllers (and the optional ones it has) enabled for its children.
pub(super) fn parent(root: &Path) -> io::Result<PathBuf> {
    let available = read(&root.join("cgroup.controllers"))?;
    let has = |c: &str| available.split_whitespace().any(|a| a == c);
    for c in CONTROLLERS {
        if !has(c) {
            return Err(io::Error::other(format!(
                "the cgroup2 controller {c:?} is not available in {} (have: {available})",
                root.display()
            )));
        }
    }
    let parent = root.join("airlock");
    match std::fs::create_dir(&parent) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(super::with_path(e, &parent)),
    }
    let enable = CONTROLLERS
        .iter()
        .chain(OPTIONAL.iter().filter(|c| has(c)))
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    write(&root.join("cgroup.subtree_control"), &enable)?;
    write(&parent.join("cgroup.subtree_control"), &enable)?;
    Ok(parent)
}

/// Sums `rbytes=` and `wbytes=` over the devices of an `io.stat` file
/// (`MAJ:MIN rbytes=N wbytes=N rios=N ...`, one line per device).
fn io_stat_bytes(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for field in text.lines().flat_map(|l| l.split_whitespace().skip(1)) {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let n: u64 = value.parse().unwrap_or(0);
        match key {
            "rbytes" => read = read.saturating_add(n),
            "wbytes" => written = written.saturating_add(n),
            _ => {}
        }
    }
    (read, written)
}

/// A job's cgroup v2.
#[derive(Debug)]
pub(super) struct V2 {
    dir: PathBuf,
}

impl V2 {
    /// Creates `parent/name` and writes the limits.
    pub(super) fn create(parent: &Path, name: &str, limits: &Limits) -> io::Result<V2> {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).map_err(|e| super::with_path(e, &dir))?;
        let cg = V2 { dir };
        if let Err(e) = cg.set_limits(limits) {
            let _ = cg.remove();
            return Err(e);
        }
        Ok(cg)
    }
}

impl Cgroup for V2 {
    fn set_limits(&self, limits: &Limits) -> io::Result<()> {
        if let Some(bytes) = limits.memory {
            write(&self.dir.join("memory.max"), &bytes.to_string())?;
            let swap = self.dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
        if let Some(quota) = limits.cpu_quota_us() {
            write(
                &self.dir.join("cpu.max"),
                &format!("{quota} {}", super::CPU_PERIOD_US),
            )?;
        }
        if let Some(pids) = limits.pids {
            write(&self.dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    fn rename(&mut self, name: &str) -> io::Result<()> {
        self.dir = super::rename_dir(&self.dir, name)?;
        Ok(())
    }

    fn add_task(&self, pid: i32) -> io::Result<()> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    fn events(&self) -> io::Result<Events> {
        let memory = read(&self.dir.join("memory.events")).unwrap_or_default();
        let pids = read(&self.dir.join("pids.events")).unwrap_or_default();
        Ok(Events {
            oom_kills: keyed(&memory, "oom_kill"),
            pids_max: keyed(&pids, "max"),
        })
    }

    fn sample(&self) -> io::Result<Sample> {
        let cpu = read_optional(&self.dir.join("cpu.stat"))?;
        let (io_read_bytes, io_write_bytes) =
            io_stat_bytes(&read_optional(&self.dir.join("io.stat"))?);
        Ok(Sample {
            cpu_usage_ns: keyed(&cpu, "usage_usec").saturating_mul(1000),
            memory_bytes: counter(&self.dir.join("memory.current"))?,
            pids: counter(&self.dir.join("pids.current"))?,
            io_read_bytes,
            io_write_bytes,
        })
    }

    fn procs(&self) -> io::Result<Vec<i32>> {
        super::procs_of(&self.dir)
    }

    fn perf_dir(&self) -> Option<PathBuf> {
        Some(self.dir.clone())
    }

    fn freeze(&self) -> io::Result<()> {
        write(&self.dir.join("cgroup.freeze"), "1")?;
        let events = self.dir.join("cgroup.events");
        wait_until(&format!("freeze {}", self.dir.display()), || {
            Ok(keyed(&read(&events)?, "frozen") == 1)
        })
    }

    fn thaw(&self) -> io::Result<()> {
        write(&self.dir.join("cgroup.freeze"), "0")
    }

    fn kill_all(&self) -> io::Result<()> {
        if self.procs()?.is_empty() {
            return Ok(());
        }
        let kill = self.dir.join("cgroup.kill");
        if kill.exists() {
            // Kills frozen tasks too, and whatever forks meanwhile.
            write(&kill, "1")?;
        } else {
            // Before Linux 5.14: freeze, kill each, thaw.
            let _ = self.freeze();
            for pid in self.procs()? {
                let _ = rustix::process::Pid::from_raw(pid)
                    .map(|p| rustix::process::kill_process(p, rustix::process::Signal::KILL));
            }
        }
        // Killed tasks of a frozen cgroup (frozen here, or by a
        // containment) die once it thaws.
        self.thaw()?;
        wait_empty(|| self.procs())
    }

    fn remove(&self) -> io::Result<()> {
        rmdir(&self.dir)
    }

    fn exists(&self) -> bool {
        self.dir.exists()
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }
}

/// Kills and removes the job cgroups of dead runners under `parent`.
pub(super) fn recover(parent: &Path) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(removed);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && orphaned(&name) {
            let cg = V2 { dir: entry.path() };
            cg.kill_all()?;
            cg.remove()?;
            removed.push(name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    //! Against a fake cgroupfs tree in a temporary directory: this host's
    //! unified hierarchy has no controllers (hybrid), so the v2 paths are
    //! checked for the files they write; the real v2 test runs where v2
    //! controllers exist (see the engine's resource tests).
    use super::*;

    fn fake_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .expect("write");
        std::fs::write(root.path().join("cgroup.subtree_control"), "").expect("write");
        root
    }

    fn text(p: PathBuf) -> String {
        std::fs::read_to_string(p).expect("read").trim().to_string()
    }

    #[test]
    fn parent_enables_controllers() {
        let root = fake_root();
        let parent = parent(root.path()).expect("parent");
        assert_eq!(parent, root.path().join("airlock"));
        assert_eq!(
            text(root.path().join("cgroup.subtree_control")),
            "+memory +pids +cpu +io"
        );
        assert_eq!(
            text(parent.join("cgroup.subtree_control")),
            "+memory +pids +cpu +io"
        );
    }

    #[test]
    fn io_is_enabled_only_where_available() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").expect("write");
        let parent = parent(root.path()).expect("parent");
        assert_eq!(
            text(parent.join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
    }

    #[test]
    fn samples_are_read() {
        let root = fake_root();
        let dir = root.path().join("job");
        std::fs::create_dir(&dir).expect("mkdir");
        let cg = V2 { dir: dir.clone() };
        // A cgroup whose files are not there (yet) reads as zeros.
        assert_eq!(cg.sample().expect("empty"), Sample::default());
        std::fs::write(
            dir.join("cpu.stat"),
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\n",
        )
        .expect("write");
        std::fs::write(dir.join("memory.current"), "8192\n").expect("write");
        std::fs::write(dir.join("pids.current"), "4\n").expect("write");
        std::fs::write(
            dir.join("io.stat"),
            "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n\
             253:1 rbytes=5 wbytes=7 rios=1 wios=1 dbytes=0 dios=0\n",
        )
        .expect("write");
        assert_eq!(
            cg.sample().expect("sample"),
            Sample {
                cpu_usage_ns: 2_500_000,
                memory_bytes: 8192,
                pids: 4,
                io_read_bytes: 105,
                io_write_bytes: 207,
            }
        );
    }

    #[test]
    fn freeze_waits_for_the_kernel_and_thaw_writes_zero() {
        let root = fake_root();
        let dir = root.path().join("job");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 1\n").expect("write");
        let cg = V2 { dir: dir.clone() };
        cg.freeze().expect("freeze");
        assert_eq!(text(dir.join("cgroup.freeze")), "1");
        cg.thaw().expect("thaw");
        assert_eq!(text(dir.join("cgroup.freeze")), "0");
        // A cgroup the kernel never reports frozen: an error, not a hang.
        std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").expect("write");
        let err = cg.freeze().expect_err("never frozen");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn missing_controller_is_an_error() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("cgroup.controllers"), "cpu io\n").expect("write");
        let err = parent(root.path()).expect_err("no memory controller");
        assert!(err.to_string().contains("\"memory\""), "{err}");
    }

    #[test]
    fn limits_are_written() {
        let root = fake_root();
        let parent = parent(root.path()).expect("parent");
        let limits = Limits {
            memory: Some(512 << 20),
            cpus: Some(1.5),
            pids: Some(256),
        };
        let cg = V2::create(&parent, "build.1.1", &limits).expect("create");
        assert_eq!(text(cg.dir.join("memory.max")), "536870912");
        assert_eq!(text(cg.dir.join("cpu.max")), "150000 100000");
        assert_eq!(text(cg.dir.join("pids.max")), "256");
        cg.add_task(1234).expect("add");
        assert_eq!(text(cg.dir.join("cgroup.procs")), "1234");
    }

    #[test]
    fn events_are_read() {
        let root = fake_root();
        let dir = root.path().join("job");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n",
        )
        .expect("write");
        std::fs::write(dir.join("pids.events"), "max 5\n").expect("write");
        let cg = V2 { dir };
        assert_eq!(
            cg.events().expect("events"),
            Events {
                oom_kills: 2,
                pids_max: 5
            }
        );
    }

    #[test]
    fn recover_takes_only_dead_runners() {
        let root = fake_root();
        let parent = root.path().join("airlock");
        let ours = super::super::name_for("a", 1);
        for name in [ours.as_str(), "b.1.999999999"] {
            // Empty directories: a real cgroup dir holds only kernel files,
            // which rmdir ignores.
            std::fs::create_dir_all(parent.join(name)).expect("mkdir");
        }
        let removed = recover(&parent).expect("recover");
        assert_eq!(removed, ["b.1.999999999"]);
        assert!(parent.join(&ours).exists());
    }
}
