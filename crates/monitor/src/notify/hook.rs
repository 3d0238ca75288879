//! The command hook: an operator's program run with the alert on stdin.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

use super::alert::Alert;
use super::{Cancel, NotifyError};

/// The variables a hook gets from the runner's environment; no others, as
/// the runner's environment may hold credentials.
pub const PASSED_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];

/// How often a running hook is checked on.
const POLL: Duration = Duration::from_millis(10);

/// How much of a failed hook's stderr a message keeps, in characters.
const STDERR_KEPT: usize = 200;

/// An operator's command, run (without a shell) for every alert.
///
/// It reads the alert's JSON on stdin and gets `AIRLOCK_ALERT_RULE`,
/// `AIRLOCK_ALERT_SEVERITY`, `AIRLOCK_ALERT_ACTION`, `AIRLOCK_RUN`,
/// `AIRLOCK_PIPELINE` and `AIRLOCK_JOB` in its environment, along with
/// [`PASSED_ENV`] and nothing else. It runs in its own process group; when
/// it outlives its timeout (default 10 s) the whole group is killed. A
/// non-zero exit is a failed delivery. A hook is run once per alert, not
/// retried: it may not be safe to run twice.
#[derive(Debug, Clone)]
pub struct CommandHook {
    program: PathBuf,
    args: Vec<OsString>,
    timeout: Duration,
    env: Vec<(OsString, OsString)>,
}

impl CommandHook {
    /// The default timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A hook running `program` with `args`, passing [`PASSED_ENV`] from
    /// this process's environment.
    pub fn new<I, S>(program: impl Into<PathBuf>, args: I) -> CommandHook
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        CommandHook {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            timeout: Self::DEFAULT_TIMEOUT,
            env: passed(std::env::vars_os()),
        }
    }

    /// The same hook passing [`PASSED_ENV`] from `base` rather than from
    /// this process's environment; the other variables of `base` are not
    /// passed.
    pub fn with_base_env<I, K, V>(mut self, base: I) -> CommandHook
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env = passed(base.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The same hook with a timeout of `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> CommandHook {
        self.timeout = timeout;
        self
    }

    /// The program it runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// How long it may run.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The command that runs it for `alert`: program, arguments and the
    /// whole environment (stdio and process group are set when it runs).
    pub fn command(&self, alert: &Alert) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).env_clear();
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
            .env("AIRLOCK_ALERT_RULE", &alert.rule)
            .env("AIRLOCK_ALERT_SEVERITY", &alert.severity)
            .env("AIRLOCK_ALERT_ACTION", &alert.action)
            .env("AIRLOCK_RUN", alert.run.to_string())
            .env("AIRLOCK_PIPELINE", &alert.pipeline)
            .env("AIRLOCK_JOB", &alert.job);
        command
    }

    /// Runs the hook for `alert` and waits for it (at most its timeout).
    pub fn deliver(&self, alert: &Alert) -> Result<(), NotifyError> {
        self.deliver_until(alert, &Cancel::default())
    }

    /// [`CommandHook::deliver`], killing the hook if `cancel` is set.
    pub(crate) fn deliver_until(&self, alert: &Alert, cancel: &Cancel) -> Result<(), NotifyError> {
        let program = || self.program.clone();
        let mut child = self
            .command(alert)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|source| NotifyError::HookSpawn {
                program: program(),
                source,
            })?;

        // Written from a thread so a hook that does not read its stdin
        // cannot block the wait below; a hook may exit without reading it,
        // so a broken pipe is not an error.
        if let Some(mut stdin) = child.stdin.take() {
            let body = alert.to_json();
            let _ = thread::Builder::new()
                .name("airlock-hook-stdin".into())
                .spawn(move || {
                    let _ = stdin.write_all(&body);
                });
        }
        let stderr = child.stderr.take().map(read_stderr);

        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(source) => {
                    kill(&mut child);
                    return Err(NotifyError::HookWait {
                        program: program(),
                        source,
                    });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                kill(&mut child);
                return Err(NotifyError::HookTimeout {
                    program: program(),
                    timeout: self.timeout,
                });
            }
            if cancel.sleep(POLL.min(deadline - now)) {
                kill(&mut child);
                return Err(NotifyError::HookCancelled { program: program() });
            }
        };
        if status.success() {
            return Ok(());
        }
        // A process the hook left running may hold stderr open: do not wait
        // long for it.
        let stderr = stderr
            .and_then(|rx| rx.recv_timeout(Duration::from_millis(500)).ok())
            .unwrap_or_default();
        Err(NotifyError::HookExit {
            program: program(),
            status,
            stderr: first_line(&stderr),
        })
    }
}

/// The variables of `vars` named in [`PASSED_ENV`].
fn passed(vars: impl Iterator<Item = (OsString, OsString)>) -> Vec<(OsString, OsString)> {
    vars.filter(|(key, _)| PASSED_ENV.iter().any(|name| OsStr::new(name) == key))
        .collect()
}

/// Reads what the hook writes to stderr on a thread, keeping the first 4 KiB
/// and discarding the rest so the hook never blocks on a full pipe.
fn read_stderr(mut stderr: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    let _ = thread::Builder::new()
        .name("airlock-hook-stderr".into())
        .spawn(move || {
            let mut kept = Vec::new();
            let _ = stderr.by_ref().take(4096).read_to_end(&mut kept);
            let _ = io::copy(&mut stderr, &mut io::sink());
            let _ = tx.send(kept);
        });
    rx
}

/// Kills the hook's process group, then the hook itself should it have
/// left the group, and reaps it.
fn kill(child: &mut Child) {
    let _ = kill_process_group(Pid::from_child(child), Signal::KILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// The first non-empty line of `stderr`, trimmed and cut to
/// [`STDERR_KEPT`] characters.
fn first_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(STDERR_KEPT).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_passed_variables_are_taken() {
        let base = [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/root"),
            ("LANG", "C.UTF-8"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("PATHX", "y"),
        ];
        let hook = CommandHook::new("true", Vec::<OsString>::new()).with_base_env(base);
        let names: Vec<&OsStr> = hook.env.iter().map(|(k, _)| k.as_os_str()).collect();
        assert_eq!(names, ["PATH", "HOME", "LANG"]);
    }

    #[test]
    fn first_line_is_trimmed_and_cut() {
        assert_eq!(first_line(b"\n  boom: no route \nmore"), "boom: no route");
        assert_eq!(first_line(b""), "");
        assert_eq!(first_line(&[b'x'; 1000]).len(), STDERR_KEPT);
    }
}
