//! Subscribers the engine always runs: the run record (SQLite) and the
//! per-job log files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use state::{JobEnd, RunId, Status, Store};

use crate::event::{Event, Line, Subscriber};

/// Writes the run record as events arrive.
pub(crate) struct Recorder<'a> {
    pub store: &'a Store,
    pub run: RunId,
    /// Pipeline name: baselines are kept per pipeline and job.
    pub pipeline: &'a str,
    /// What each job used, held until it ends: a successful job's
    /// endpoints and binaries join its baseline.
    pub learned: Mutex<HashMap<String, Learned>>,
    pub logs: &'a LogFiles,
    pub artifacts: HashMap<String, Vec<String>>,
    /// The first write error, reported at the end of the run.
    pub error: Mutex<Option<state::StateError>>,
}

/// The endpoints and binaries of a job, from its `JobActivity`.
pub(crate) type Learned = (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
);

impl Recorder<'_> {
    fn keep(&self, r: Result<(), state::StateError>) {
        if let Err(e) = r {
            tracing::error!("cannot update the run record: {e}");
            if let Ok(mut slot) = self.error.lock() {
                slot.get_or_insert(e);
            }
        }
    }
}

impl Subscriber for Recorder<'_> {
    fn event(&self, event: &Event) {
        let (store, run) = (self.store, self.run);
        match event {
            Event::JobStarted { job } => self.keep(store.job_started(run, job)),
            Event::StepStarted { job, index, .. } => {
                self.keep(store.step_started(run, job, *index));
            }
            Event::StepFinished {
                job,
                index,
                status,
                exit_code,
                ..
            } => self.keep(store.step_finished(run, job, *index, *status, *exit_code)),
            Event::JobFinished {
                job,
                status,
                exit_code,
                reason,
                ..
            } => {
                let artifacts = if *status == Status::Success {
                    self.artifacts.get(job).cloned().unwrap_or_default()
                } else {
                    Vec::new()
                };
                let end = JobEnd {
                    status: *status,
                    exit_code: *exit_code,
                    reason: reason.clone(),
                    log_path: Some(self.logs.path(job)),
                    artifacts,
                };
                self.keep(store.job_finished(run, job, &end));
                let learned = self.learned.lock().ok().and_then(|mut l| l.remove(job));
                if let (Status::Success, Some((endpoints, binaries))) = (status, learned) {
                    self.keep(store.learn_baseline(self.pipeline, job, &endpoints, &binaries));
                }
            }
            Event::JobSkipped { job, because } => {
                let end = JobEnd {
                    status: Status::Skipped,
                    exit_code: None,
                    reason: Some(because.clone()),
                    log_path: None,
                    artifacts: Vec::new(),
                };
                self.keep(store.job_finished(run, job, &end));
            }
            Event::RunFinished {
                status, exit_code, ..
            } => self.keep(store.run_finished(run, *status, *exit_code)),
            Event::Egress {
                job,
                kind,
                host,
                port,
                addr,
                allowed,
                detail,
                bytes_up,
                bytes_down,
                took,
            } => {
                let egress = state::Egress {
                    at: state::Timestamp::now(),
                    kind: kind.clone(),
                    host: host.clone(),
                    port: *port,
                    addr: addr.clone(),
                    allowed: *allowed,
                    detail: detail.clone(),
                    bytes_up: *bytes_up,
                    bytes_down: *bytes_down,
                    duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                };
                self.keep(store.egress(run, job, &egress));
            }
            Event::Alert {
                job,
                rule,
                severity,
                description,
                action,
                summary,
                observation,
            } => {
                let alert = state::Alert {
                    at: state::Timestamp::now(),
                    rule: rule.clone(),
                    severity: severity.clone(),
                    action: action.clone(),
                    description: description.clone(),
                    summary: summary.clone(),
                    observation: observation.to_string(),
                };
                self.keep(store.alert(run, job, &alert));
            }
            Event::Contained {
                job,
                rule,
                summary,
                processes,
                took,
            } => {
                let incident = state::Incident {
                    at: state::Timestamp::now(),
                    rule: rule.clone(),
                    summary: summary.clone(),
                    processes: processes.clone(),
                    took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                };
                self.keep(store.incident(run, job, &incident));
            }
            Event::JobActivity {
                job,
                execs,
                execs_lost,
                processes,
                files,
                endpoints,
                binaries,
                ..
            } => {
                self.keep(store.job_activity(run, job, (*execs, *execs_lost), processes, files));
                if let Ok(mut learned) = self.learned.lock() {
                    learned.insert(job.clone(), (endpoints.clone(), binaries.clone()));
                }
            }
            Event::OutputLimited { job, limit } => {
                self.keep(store.output_limited(run, job, *limit));
            }
            Event::OutputDropped { job, bytes } => {
                self.keep(store.output_dropped(run, job, *bytes));
            }
            Event::RunStarted { .. }
            | Event::AlertsSuppressed { .. }
            | Event::SandboxReady { .. }
            | Event::TeardownFailed { .. }
            | Event::SecretLeased { .. }
            | Event::MaskAdded { .. }
            | Event::MaskRefused { .. }
            | Event::SecretRevoked { .. } => {}
        }
    }
}

/// Bytes of a job's log held before they are written to the file.
const LOG_BUFFER: usize = 64 * 1024;

/// The kernel is asked to start writing a log to disk every time this much
/// more of it has been written to the file.
///
/// Without it, a chatty job's log stays in the page cache until the job
/// ends (the host's dirty limits are far above a job's log), and the fsync
/// at the end then writes it all while the run waits: 1.8 to 2.4 s for a
/// 1 GiB log, most of the run's run-to-run spread (BENCHMARKS.md,
/// "Redaction end to end"). Started early, the writing overlaps the job,
/// and the final fsync only waits for the last few MiB.
const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;

/// One log file per job under `RUN_DIR/logs/`, mode 0600: the job's
/// (redacted) output with a header line per step. Written back to disk as
/// it grows, and synced when the job ends.
pub struct LogFiles {
    dir: PathBuf,
    open: Mutex<HashMap<String, Log>>,
}

/// An open log file.
struct Log {
    w: BufWriter<File>,
    /// Bytes handed to `w` so far (some may still be in its buffer).
    written: u64,
    /// Bytes whose writeback has been started.
    started: u64,
}

impl Log {
    /// Starts the writeback of what reached the file since the last time,
    /// once that is [`WRITEBACK_EVERY`] bytes or more. Asynchronous: the
    /// kernel queues the writes and returns; durability still comes from
    /// the fsync when the job ends.
    fn write_back(&mut self) {
        let buffered = u64::try_from(self.w.buffer().len()).unwrap_or(u64::MAX);
        let in_file = self.written.saturating_sub(buffered);
        if in_file.saturating_sub(self.started) < WRITEBACK_EVERY {
            return;
        }
        // Whole blocks only: the file's last page is still being appended
        // to, and a write to a page under writeback may wait for it.
        let to = in_file - in_file % WRITEBACK_EVERY;
        let (Ok(offset), Ok(len)) = (
            i64::try_from(self.started),
            i64::try_from(to - self.started),
        ) else {
            return;
        };
        // SAFETY: sync_file_range only reads its integer arguments; the
        // descriptor belongs to `self.w`'s file, open for the whole call.
        let r = unsafe {
            libc::sync_file_range(
                self.w.get_ref().as_raw_fd(),
                offset,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        // A failure costs only the early start: the fsync at the end of
        // the job writes what is left, and reports errors.
        if r == 0 {
            self.started = to;
        } else {
            self.started = u64::MAX;
        }
    }
}

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(buf)?;
        self.written += u64::try_from(n).unwrap_or(u64::MAX);
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.w.write_all(buf)?;
        self.written += u64::try_from(buf.len()).unwrap_or(u64::MAX);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

impl LogFiles {
    /// Log files in `dir` (created when the first job starts).
    pub fn new(dir: &Path) -> LogFiles {
        LogFiles {
            dir: dir.to_path_buf(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The log file of `job`.
    pub fn path(&self, job: &str) -> PathBuf {
        self.dir.join(format!("{job}.log"))
    }

    fn with(&self, job: &str, f: impl FnOnce(&mut Log) -> std::io::Result<()>) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        if let Some(log) = open.get_mut(job) {
            if let Err(e) = f(log) {
                tracing::error!("cannot write the log of job {job}: {e}");
            }
        }
    }

    fn create(&self, job: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(self.path(job))?;
        if let Ok(mut open) = self.open.lock() {
            // Large enough that a chatty job costs one write(2) per
            // several hundred lines.
            let log = Log {
                w: BufWriter::with_capacity(LOG_BUFFER, file),
                written: 0,
                started: 0,
            };
            open.insert(job.to_string(), log);
        }
        Ok(())
    }

    fn close(&self, job: &str) -> std::io::Result<()> {
        let log = self.open.lock().ok().and_then(|mut open| open.remove(job));
        if let Some(log) = log {
            let file = log.w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
        }
        Ok(())
    }
}

impl Subscriber for LogFiles {
    fn event(&self, event: &Event) {
        match event {
            Event::JobStarted { job } => {
                if let Err(e) = self.create(job) {
                    tracing::error!("cannot create the log of job {job}: {e}");
                }
            }
            Event::StepStarted { job, index, name } => {
                self.with(job, |w| writeln!(w, "── step {}: {name}", index + 1))
            }
            Event::StepFinished {
                job,
                status,
                exit_code,
                took,
                ..
            } => self.with(job, |w| {
                let code = exit_code.map(|c| format!(", exit {c}")).unwrap_or_default();
                writeln!(w, "── {status}{code} in {}", crate::job::human(*took))
            }),
            Event::OutputLimited { job, limit } => self.with(job, |w| {
                let limit = spec::format_size(*limit);
                writeln!(w, "── output past {limit} is not kept; the job runs on")
            }),
            Event::JobFinished { job, .. } => {
                if let Err(e) = self.close(job) {
                    tracing::error!("cannot finish the log of job {job}: {e}");
                }
            }
            _ => {}
        }
    }

    fn output(&self, job: &str, lines: &[Line<'_>]) {
        self.with(job, |w| {
            for line in lines {
                w.write_all(line.text)?;
                if !line.partial {
                    w.write_all(b"\n")?;
                }
            }
            w.write_back();
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_log_is_written_back_as_it_grows_and_whole_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path());
        let job = "big".to_string();
        logs.event(&Event::JobStarted { job: job.clone() });
        let line = [b'x'; 999];
        let batch = vec![
            Line {
                text: &line,
                partial: false,
            };
            256
        ];
        // 20 MiB and a bit: two blocks' writeback started, the rest not.
        let batches = 20 * 1024 * 1024 / (1000 * 256) + 1;
        for _ in 0..batches {
            logs.output(&job, &batch);
        }
        let started = logs.open.lock().unwrap().get(&job).unwrap().started;
        assert_eq!(started, 2 * WRITEBACK_EVERY);
        logs.event(&Event::JobFinished {
            job: job.clone(),
            status: Status::Success,
            exit_code: Some(0),
            reason: None,
            took: std::time::Duration::from_secs(1),
        });
        let text = std::fs::read(logs.path(&job)).unwrap();
        assert_eq!(text.len(), batches * 256 * 1000);
        assert!(text
            .chunks(1000)
            .all(|l| l[..999] == line && l[999] == b'\n'));
    }
}
