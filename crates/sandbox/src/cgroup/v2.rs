//! cgroup v2: one directory per job under `airlock/` at the top of the
//! unified hierarchy (the root cgroup is exempt from the "no internal
//! processes" rule, so controllers can be enabled for `airlock/` whatever
//! cgroup the runner itself sits in).

use std::io;
use std::path::{Path, PathBuf};

use super::{keyed, orphaned, read, rmdir, wait_empty, write, Cgroup, Events, Limits};

/// Controllers a job's cgroup needs.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The `airlock` parent under a cgroup2 mount at `root`, with the needed
/// controllers enabled for its children.
pub(super) fn parent(root: &Path) -> io::Result<PathBuf> {
    let available = read(&root.join("cgroup.controllers"))?;
    for c in CONTROLLERS {
        if !available.split_whitespace().any(|a| a == c) {
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
    let enable = CONTROLLERS.map(|c| format!("+{c}")).join(" ");
    write(&root.join("cgroup.subtree_control"), &enable)?;
    write(&parent.join("cgroup.subtree_control"), &enable)?;
    Ok(parent)
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
        let to = self.dir.with_file_name(name);
        std::fs::rename(&self.dir, &to).map_err(|e| super::with_path(e, &self.dir))?;
        self.dir = to;
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

    fn procs(&self) -> io::Result<Vec<i32>> {
        super::procs_of(&self.dir)
    }

    fn kill_all(&self) -> io::Result<()> {
        if self.procs()?.is_empty() {
            return Ok(());
        }
        let kill = self.dir.join("cgroup.kill");
        if kill.exists() {
            write(&kill, "1")?;
        } else {
            // Before Linux 5.14: freeze, kill each, thaw.
            let freeze = self.dir.join("cgroup.freeze");
            write(&freeze, "1")?;
            for pid in self.procs()? {
                let _ = rustix::process::Pid::from_raw(pid)
                    .map(|p| rustix::process::kill_process(p, rustix::process::Signal::KILL));
            }
            write(&freeze, "0")?;
        }
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
            "+memory +pids +cpu"
        );
        assert_eq!(
            text(parent.join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
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
