//! cgroup v1 (legacy and hybrid hosts): one directory per job in each of
//! the memory, cpu, pids and freezer hierarchies, under the runner's own
//! cgroup in each (so a job never escapes the limits the runner itself
//! runs under) plus `airlock/`.

use std::io;
use std::path::{Path, PathBuf};

use super::{keyed, orphaned, read, rmdir, wait_empty, write, Cgroup, Events, Limits};

/// v1 controllers a job needs.
const CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "freezer"];

/// The mount point of each v1 controller, from `/proc/self/mountinfo`.
fn mounts() -> io::Result<Vec<(String, PathBuf)>> {
    let info = read(Path::new("/proc/self/mountinfo"))?;
    let mut found = Vec::new();
    for line in info.lines() {
        // ... mount-point ... - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        if r.next() != Some("cgroup") {
            continue;
        }
        let options = r.nth(1).unwrap_or_default();
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        for c in options.split(',') {
            if CONTROLLERS.contains(&c) {
                found.push((c.to_string(), PathBuf::from(mount_point)));
            }
        }
    }
    Ok(found)
}

/// This process's cgroup in each v1 hierarchy, from `/proc/self/cgroup`.
fn own_path(controller: &str) -> io::Result<String> {
    let text = read(Path::new("/proc/self/cgroup"))?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, list, path) = (parts.next(), parts.next(), parts.next());
        if list.is_some_and(|l| l.split(',').any(|c| c == controller)) {
            return Ok(path.unwrap_or("/").to_string());
        }
    }
    Ok("/".into())
}

/// The `airlock` parent in each controller's hierarchy.
fn parents() -> io::Result<Vec<(String, PathBuf)>> {
    let mounts = mounts()?;
    let mut parents = Vec::new();
    for c in CONTROLLERS {
        let (_, mount) = mounts.iter().find(|(name, _)| name == c).ok_or_else(|| {
            io::Error::other(format!("the cgroup v1 controller {c:?} is not mounted"))
        })?;
        let own = own_path(c)?;
        let parent = mount.join(own.trim_start_matches('/')).join("airlock");
        parents.push((c.to_string(), parent));
    }
    Ok(parents)
}

/// A job's cgroups in the v1 hierarchies.
#[derive(Debug)]
pub(super) struct V1 {
    /// (controller, directory)
    dirs: Vec<(String, PathBuf)>,
}

impl V1 {
    /// Creates `airlock/NAME` in every needed hierarchy and writes the limits.
    pub(super) fn create(name: &str, limits: &Limits) -> io::Result<V1> {
        let mut cg = V1 { dirs: Vec::new() };
        for (controller, parent) in parents()? {
            std::fs::create_dir_all(&parent).map_err(|e| super::with_path(e, &parent))?;
            let dir = parent.join(name);
            if let Err(e) = std::fs::create_dir(&dir) {
                let _ = cg.remove();
                return Err(super::with_path(e, &dir));
            }
            cg.dirs.push((controller, dir));
        }
        if let Err(e) = cg.set_limits(limits) {
            let _ = cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, d)| d.as_path())
    }
}

impl Cgroup for V1 {
    fn set_limits(&self, limits: &Limits) -> io::Result<()> {
        if let (Some(bytes), Some(dir)) = (limits.memory, self.dir("memory")) {
            // The memory limit first: memsw may never be below it.
            write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &bytes.to_string())?;
            } else {
                // No swap accounting: keep the job's pages out of swap.
                write(&dir.join("memory.swappiness"), "0")?;
            }
        }
        if let (Some(quota), Some(dir)) = (limits.cpu_quota_us(), self.dir("cpu")) {
            write(
                &dir.join("cpu.cfs_period_us"),
                &super::CPU_PERIOD_US.to_string(),
            )?;
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if let (Some(pids), Some(dir)) = (limits.pids, self.dir("pids")) {
            write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    fn rename(&mut self, name: &str) -> io::Result<()> {
        for (_, dir) in &mut self.dirs {
            let to = dir.with_file_name(name);
            std::fs::rename(&*dir, &to).map_err(|e| super::with_path(e, dir))?;
            *dir = to;
        }
        Ok(())
    }

    fn add_task(&self, pid: i32) -> io::Result<()> {
        for (_, dir) in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn events(&self) -> io::Result<Events> {
        let oom = self
            .dir("memory")
            .map(|d| read(&d.join("memory.oom_control")).unwrap_or_default())
            .unwrap_or_default();
        let pids = self
            .dir("pids")
            .map(|d| read(&d.join("pids.events")).unwrap_or_default())
            .unwrap_or_default();
        Ok(Events {
            oom_kills: keyed(&oom, "oom_kill"),
            pids_max: keyed(&pids, "max"),
        })
    }

    fn procs(&self) -> io::Result<Vec<i32>> {
        self.dir("pids").map_or(Ok(Vec::new()), super::procs_of)
    }

    fn kill_all(&self) -> io::Result<()> {
        if self.procs()?.is_empty() {
            return Ok(());
        }
        // Freeze first so nothing can fork while we kill.
        let state = self.dir("freezer").map(|d| d.join("freezer.state"));
        if let Some(state) = &state {
            write(state, "FROZEN")?;
            for _ in 0..500 {
                if read(state)? == "FROZEN" {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        for pid in self.procs()? {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        if let Some(state) = &state {
            write(state, "THAWED")?;
        }
        wait_empty(|| self.procs())
    }

    fn remove(&self) -> io::Result<()> {
        let mut first_error = None;
        for (_, dir) in &self.dirs {
            if let Err(e) = rmdir(dir) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn exists(&self) -> bool {
        self.dirs.iter().any(|(_, d)| d.exists())
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }
}

/// Kills and removes the job cgroups of dead runners.
pub(super) fn recover() -> io::Result<Vec<String>> {
    let parents = parents()?;
    let mut names: Vec<String> = Vec::new();
    for (_, parent) in &parents {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && orphaned(&name) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    for name in &names {
        let cg = V1 {
            dirs: parents
                .iter()
                .map(|(c, p)| (c.clone(), p.join(name)))
                .filter(|(_, d)| d.exists())
                .collect(),
        };
        cg.kill_all()?;
        cg.remove()?;
    }
    Ok(names)
}
