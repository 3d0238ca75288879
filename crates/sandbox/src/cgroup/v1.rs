//! cgroup v1 (legacy and hybrid hosts): one directory per job in each of
//! the memory, cpu, pids and freezer hierarchies, plus cpuacct and blkio
//! where the host mounts them (for [`Sample`]s only: a host without them
//! runs jobs all the same), under the runner's own cgroup in each (so a
//! job never escapes the limits the runner itself runs under) plus
//! `airlock/`. Controllers mounted together (`cpu,cpuacct`) share one
//! directory. The job also gets a directory in the perf_event hierarchy:
//! a v1 `perf_event` mount, else (hybrid) the cgroup2 one, which has no
//! other controller.

use std::io;
use std::path::{Path, PathBuf};

use super::{
    counter, keyed, orphaned, read, read_optional, rmdir, wait_empty, wait_until, write, Cgroup,
    Events, Limits, Sample,
};

/// v1 controllers a job needs.
const CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "freezer"];

/// v1 controllers used when the host mounts them: they only account
/// (`perf_event`: where perf events of the job's cgroup are counted, see
/// `perfwatch.rs`).
const OPTIONAL: [&str; 3] = ["cpuacct", "blkio", "perf_event"];

fn wanted(controller: &str) -> bool {
    CONTROLLERS.contains(&controller) || OPTIONAL.contains(&controller)
}

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
            if wanted(c) {
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
        // The cgroup2 hierarchy's line has an empty list (`0::/path`).
        let matches = |l: &str| match controller {
            "" => l.is_empty(),
            c => l.split(',').any(|x| x == c),
        };
        if list.is_some_and(matches) {
            return Ok(path.unwrap_or("/").to_string());
        }
    }
    Ok("/".into())
}

/// The `airlock` parent in each controller's hierarchy: every needed one,
/// then the optional ones the host mounts.
fn parents() -> io::Result<Vec<(String, PathBuf)>> {
    let mounts = mounts()?;
    let mut parents = Vec::new();
    for c in CONTROLLERS.iter().chain(OPTIONAL.iter()) {
        let Some((_, mount)) = mounts.iter().find(|(name, _)| name == c) else {
            if OPTIONAL.contains(c) {
                continue;
            }
            return Err(io::Error::other(format!(
                "the cgroup v1 controller {c:?} is not mounted"
            )));
        };
        let own = own_path(c)?;
        let parent = mount.join(own.trim_start_matches('/')).join("airlock");
        parents.push(((*c).to_string(), parent));
    }
    // A hybrid host leaves perf_event to its (otherwise empty) cgroup2
    // hierarchy: a job's directory there is its perf_event cgroup.
    if !parents.iter().any(|(c, _)| c == "perf_event") {
        if let Some(mount) = unified_mount()? {
            let own = own_path("")?;
            let parent = mount.join(own.trim_start_matches('/')).join("airlock");
            parents.push(("perf_event".to_string(), parent));
        }
    }
    Ok(parents)
}

/// Where the cgroup2 hierarchy is mounted beside the v1 ones, if it is.
fn unified_mount() -> io::Result<Option<PathBuf>> {
    let info = read(Path::new("/proc/self/mountinfo"))?;
    Ok(info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next() != Some("cgroup2") {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    }))
}

/// Sums the `Read` and `Write` lines of a `blkio.throttle.io_service_bytes`
/// file (`MAJ:MIN Read N`, one set of lines per device, then `Total N`).
fn blkio_bytes(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(_device), Some(op), Some(n), None) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let n: u64 = n.parse().unwrap_or(0);
        match op {
            "Read" => read = read.saturating_add(n),
            "Write" => written = written.saturating_add(n),
            _ => {}
        }
    }
    (read, written)
}

/// A job's cgroups in the v1 hierarchies.
#[derive(Debug)]
pub(super) struct V1 {
    /// (controller, directory); co-mounted controllers share a directory.
    dirs: Vec<(String, PathBuf)>,
}

impl V1 {
    /// Creates `airlock/NAME` in every needed hierarchy (and in each
    /// optional one where that works) and writes the limits.
    pub(super) fn create(name: &str, limits: &Limits) -> io::Result<V1> {
        let mut cg = V1 { dirs: Vec::new() };
        for (controller, parent) in parents()? {
            let dir = parent.join(name);
            if cg.dirs.iter().any(|(_, d)| *d == dir) {
                // Mounted together with a controller already done.
                cg.dirs.push((controller, dir));
                continue;
            }
            let made = std::fs::create_dir_all(&parent)
                .map_err(|e| super::with_path(e, &parent))
                .and_then(|()| std::fs::create_dir(&dir).map_err(|e| super::with_path(e, &dir)));
            match made {
                Ok(()) => cg.dirs.push((controller, dir)),
                // Accounting only: the job runs without it.
                Err(_) if OPTIONAL.contains(&controller.as_str()) => {}
                Err(e) => {
                    let _ = cg.remove();
                    return Err(e);
                }
            }
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

    /// Each directory once (co-mounted controllers share one).
    fn unique_dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = Vec::with_capacity(self.dirs.len());
        for (_, d) in &self.dirs {
            if !dirs.contains(&d.as_path()) {
                dirs.push(d);
            }
        }
        dirs
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
        let from: Vec<PathBuf> = self
            .unique_dirs()
            .into_iter()
            .map(Path::to_path_buf)
            .collect();
        for old in from {
            let to = super::rename_dir(&old, name)?;
            for (_, dir) in &mut self.dirs {
                if *dir == old {
                    dir.clone_from(&to);
                }
            }
        }
        Ok(())
    }

    fn add_task(&self, pid: i32) -> io::Result<()> {
        for dir in self.unique_dirs() {
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

    fn sample(&self) -> io::Result<Sample> {
        let file = |controller: &str, name: &str| self.dir(controller).map(|d| d.join(name));
        let count =
            |controller: &str, name: &str| file(controller, name).map_or(Ok(0), |p| counter(&p));
        let blkio = match file("blkio", "blkio.throttle.io_service_bytes") {
            Some(p) => read_optional(&p)?,
            None => String::new(),
        };
        let (io_read_bytes, io_write_bytes) = blkio_bytes(&blkio);
        Ok(Sample {
            cpu_usage_ns: count("cpuacct", "cpuacct.usage")?,
            memory_bytes: count("memory", "memory.usage_in_bytes")?,
            pids: count("pids", "pids.current")?,
            io_read_bytes,
            io_write_bytes,
        })
    }

    fn procs(&self) -> io::Result<Vec<i32>> {
        self.dir("pids").map_or(Ok(Vec::new()), super::procs_of)
    }

    fn perf_dir(&self) -> Option<PathBuf> {
        self.dir("perf_event").map(Path::to_path_buf)
    }

    fn freeze(&self) -> io::Result<()> {
        let Some(dir) = self.dir("freezer") else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the job has no freezer cgroup",
            ));
        };
        let state = dir.join("freezer.state");
        write(&state, "FROZEN")?;
        // FREEZING until every task has stopped.
        wait_until(&format!("freeze {}", dir.display()), || {
            Ok(read(&state)? == "FROZEN")
        })
    }

    fn thaw(&self) -> io::Result<()> {
        match self.dir("freezer") {
            Some(dir) => write(&dir.join("freezer.state"), "THAWED"),
            None => Ok(()),
        }
    }

    fn kill_all(&self) -> io::Result<()> {
        if self.procs()?.is_empty() {
            return Ok(());
        }
        // Freeze first so nothing can fork while we kill. A task that will
        // not freeze (stuck in the kernel) is killed all the same.
        let _ = self.freeze();
        for pid in self.procs()? {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        // Killed tasks die when they thaw.
        self.thaw()?;
        wait_empty(|| self.procs())
    }

    fn remove(&self) -> io::Result<()> {
        let mut first_error = None;
        for dir in self.unique_dirs() {
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
        self.unique_dirs()
            .into_iter()
            .map(Path::to_path_buf)
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_sums_reads_and_writes_of_every_device() {
        let text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 12288\n8:0 Async 0\n\
                    8:0 Discard 0\n8:0 Total 12288\n8:16 Read 1\n8:16 Write 2\n\
                    8:16 Total 3\nTotal 12291\n";
        assert_eq!(blkio_bytes(text), (4097, 8194));
        assert_eq!(blkio_bytes(""), (0, 0));
        assert_eq!(blkio_bytes("Total 0\n"), (0, 0));
    }

    #[test]
    fn co_mounted_controllers_share_one_directory() {
        let cg = V1 {
            dirs: vec![
                ("cpu".into(), "/c/cpu,cpuacct/airlock/j".into()),
                ("memory".into(), "/c/memory/airlock/j".into()),
                ("cpuacct".into(), "/c/cpu,cpuacct/airlock/j".into()),
            ],
        };
        assert_eq!(
            cg.paths(),
            [
                PathBuf::from("/c/cpu,cpuacct/airlock/j"),
                PathBuf::from("/c/memory/airlock/j")
            ]
        );
        assert_eq!(
            cg.dir("cpuacct"),
            Some(Path::new("/c/cpu,cpuacct/airlock/j"))
        );
    }

    #[test]
    fn samples_read_each_controllers_files() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut dirs = Vec::new();
        for c in ["memory", "cpu", "pids", "freezer", "cpuacct", "blkio"] {
            let d = root.path().join(c);
            std::fs::create_dir(&d).expect("mkdir");
            dirs.push((c.to_string(), d));
        }
        let at = |c: &str, f: &str, v: &str| {
            std::fs::write(root.path().join(c).join(f), v).expect("write");
        };
        at("cpuacct", "cpuacct.usage", "123456789\n");
        at("memory", "memory.usage_in_bytes", "1048576\n");
        at("pids", "pids.current", "3\n");
        at(
            "blkio",
            "blkio.throttle.io_service_bytes",
            "8:0 Read 10\n8:0 Write 20\nTotal 30\n",
        );
        let cg = V1 { dirs };
        assert_eq!(
            cg.sample().expect("sample"),
            Sample {
                cpu_usage_ns: 123_456_789,
                memory_bytes: 1 << 20,
                pids: 3,
                io_read_bytes: 10,
                io_write_bytes: 20,
            }
        );
        // Without the optional controllers: zeros, not an error.
        let cg = V1 {
            dirs: cg
                .dirs
                .into_iter()
                .filter(|(c, _)| !OPTIONAL.contains(&c.as_str()))
                .collect(),
        };
        let sample = cg.sample().expect("sample");
        assert_eq!((sample.cpu_usage_ns, sample.io_read_bytes), (0, 0));
        assert_eq!(sample.pids, 3);
    }
}
