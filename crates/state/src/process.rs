//! Who is running a run: the runner's pid, the pid's start time and the boot
//! id, so that a later process can tell whether the runner is still alive
//! even after the pid was reused or the host rebooted.
//!
//! Limits: pids are compared in the pid namespace of the process that reads
//! `/proc`; homes shared across pid namespaces or hosts cannot be judged and
//! may see live runs of another namespace as lost.

use std::fs;
use std::io;
use std::path::Path;

/// The identity of a runner process, as recorded with its runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunnerIdentity {
    /// The process id.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot at which the
    /// process started. `None` if `/proc` could not be read.
    pub start_time: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id`. `None` if unreadable.
    pub boot_id: Option<String>,
}

impl RunnerIdentity {
    /// The identity of this process.
    pub fn current() -> RunnerIdentity {
        let pid = std::process::id();
        RunnerIdentity {
            pid,
            start_time: read_stat(pid).ok().map(|stat| stat.start_time),
            boot_id: boot_id(),
        }
    }
}

/// Whether a recorded runner is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// The same process (pid and start time) is alive.
    Alive,
    /// The process exited (or is a zombie), the pid now belongs to another
    /// process, or the host rebooted since.
    Gone,
    /// `/proc` cannot tell; the run is left alone.
    Unknown,
}

/// Decides whether `recorded` still runs, judged from `/proc`.
pub(crate) fn liveness(recorded: &RunnerIdentity) -> Liveness {
    if let (Some(then), Some(now)) = (&recorded.boot_id, boot_id()) {
        if *then != now {
            return Liveness::Gone;
        }
    }
    match read_stat(recorded.pid) {
        // A zombie has exited; only its parent has not reaped it yet.
        Ok(stat) if matches!(stat.state, 'Z' | 'X' | 'x') => Liveness::Gone,
        Ok(stat) => match recorded.start_time {
            Some(start) if start != stat.start_time => Liveness::Gone,
            _ => Liveness::Alive,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // No such pid, provided /proc is mounted at all.
            if Path::new("/proc/self/stat").exists() {
                Liveness::Gone
            } else {
                Liveness::Unknown
            }
        }
        Err(_) => Liveness::Unknown,
    }
}

/// The fields of `/proc/<pid>/stat` this module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    /// Field 3: R, S, D, Z, T, ...
    state: char,
    /// Field 22: start time in clock ticks after boot.
    start_time: u64,
}

fn read_stat(pid: u32) -> io::Result<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )
    })
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may itself contain spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let after_comm = &text[text.rfind(')')? + 1..];
    let mut fields = after_comm.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?; // field 3
    let start_time = fields.nth(22 - 4)?.parse().ok()?; // field 22
    Some(ProcStat { state, start_time })
}

fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                start_time: 987_654
            })
        );
        assert_eq!(parse_stat("1 (init"), None);
        assert_eq!(parse_stat("1 (init) S 0 1"), None);
    }

    #[test]
    fn this_process_is_alive() {
        let me = RunnerIdentity::current();
        assert!(me.start_time.is_some(), "this host has /proc");
        assert_eq!(liveness(&me), Liveness::Alive);
    }

    #[test]
    fn other_start_time_or_boot_is_gone() {
        let me = RunnerIdentity::current();
        let reused = RunnerIdentity {
            start_time: me.start_time.map(|t| t + 1),
            ..me.clone()
        };
        assert_eq!(liveness(&reused), Liveness::Gone);
        let rebooted = RunnerIdentity {
            boot_id: Some("not-this-boot".into()),
            ..me
        };
        assert_eq!(liveness(&rebooted), Liveness::Gone);
    }

    #[test]
    fn reaped_process_is_gone() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait true");
        let dead = RunnerIdentity {
            pid,
            start_time: Some(1),
            boot_id: boot_id(),
        };
        assert_eq!(liveness(&dead), Liveness::Gone);
    }
}
