//! What `airlock run` shows while it works: each job's output prefixed by
//! its job, step start and end lines, a live status line on a terminal
//! (plain lines otherwise, e.g. in CI), and a summary table at the end.

use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine::{Event, Line, RunReport, Subscriber};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use state::Status;

use crate::sanitize::{for_terminal, push_for_terminal};

/// Where the live display goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (the default).
    Stdout,
    /// Standard error (with `--json`, stdout carries only the document).
    Stderr,
}

/// The live display of a run.
pub struct Terminal {
    stream: Stream,
    tty: bool,
    width: usize,
    jobs: Vec<String>,
    bar: Option<ProgressBar>,
    running: Mutex<BTreeSet<String>>,
    /// The step each job is in (1-based), for the line prefix.
    steps: Mutex<HashMap<String, usize>>,
    /// Job output lines not shown yet, and when the first of them came.
    /// A chatty job would otherwise cost a write(2) per line.
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// Always UTF-8: lines pass `push_for_terminal` first.
    text: Vec<u8>,
    since: Option<Instant>,
}

/// Output lines are shown at the latest this long after they arrive (or
/// when the job pauses, or a step ends)...
const MAX_DELAY: Duration = Duration::from_millis(50);
/// ...or as soon as this much is waiting.
const MAX_PENDING: usize = 64 * 1024;

const COLOURS: [&str; 6] = ["36", "35", "33", "32", "34", "91"];

impl Terminal {
    /// A display for a run of `jobs`.
    pub fn new(stream: Stream, jobs: &[String]) -> Terminal {
        let tty = match stream {
            Stream::Stdout => std::io::stdout().is_terminal(),
            Stream::Stderr => std::io::stderr().is_terminal(),
        };
        let bar = tty.then(|| {
            let target = match stream {
                Stream::Stdout => ProgressDrawTarget::stdout(),
                Stream::Stderr => ProgressDrawTarget::stderr(),
            };
            let bar = ProgressBar::with_draw_target(None, target);
            if let Ok(style) = ProgressStyle::with_template("{spinner} {wide_msg} {elapsed}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Terminal {
            stream,
            tty,
            // Room for "JOB:NN".
            width: jobs.iter().map(|j| j.len()).max().unwrap_or(0) + 3,
            jobs: jobs.to_vec(),
            bar,
            running: Mutex::new(BTreeSet::new()),
            steps: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending::default()),
        }
    }

    /// `JOB:STEP │`, or `JOB │` outside a step.
    fn prefix(&self, job: &str) -> String {
        let step = self.steps.lock().ok().and_then(|s| s.get(job).copied());
        let label = match step {
            Some(n) => format!("{job}:{n}"),
            None => job.to_string(),
        };
        let padded = format!("{label:>w$} │", w = self.width);
        if !self.tty {
            return padded;
        }
        let i = self.jobs.iter().position(|j| j == job).unwrap_or(0);
        let colour = COLOURS.get(i % COLOURS.len()).copied().unwrap_or("36");
        format!("\x1b[{colour}m{padded}\x1b[0m")
    }

    fn line(&self, job: &str, text: &str) {
        let line = format!("{} {text}", self.prefix(job));
        self.print(&line);
    }

    /// Shows `line` now, after any output lines still pending.
    fn print(&self, line: &str) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        pending.text.extend_from_slice(line.as_bytes());
        pending.text.push(b'\n');
        self.write_out(&mut pending);
    }

    /// Writes what is pending (under the lock, so lines of different jobs
    /// never interleave within a line).
    fn write_out(&self, pending: &mut Pending) {
        pending.since = None;
        if pending.text.is_empty() {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.println(String::from_utf8_lossy(&pending.text).trim_end_matches('\n'));
        } else {
            // A closed pipe (e.g. `airlock run | head`) is not a reason to
            // stop the run; the output is in the log files anyway.
            let _ = match self.stream {
                Stream::Stdout => std::io::stdout().lock().write_all(&pending.text),
                Stream::Stderr => std::io::stderr().lock().write_all(&pending.text),
            };
        }
        pending.text.clear();
    }

    fn update_status(&self) {
        if let (Some(bar), Ok(running)) = (&self.bar, self.running.lock()) {
            let names: Vec<&str> = running.iter().map(String::as_str).collect();
            bar.set_message(if names.is_empty() {
                String::new()
            } else {
                format!("running: {}", names.join(", "))
            });
        }
    }

    fn styled(&self, code: &str, text: &str) -> String {
        if self.tty {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Removes the status line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Subscriber for Terminal {
    fn event(&self, event: &Event) {
        match event {
            Event::JobStarted { job } => {
                if let Ok(mut r) = self.running.lock() {
                    r.insert(job.clone());
                }
                self.update_status();
            }
            Event::StepStarted { job, index, name } => {
                if let Ok(mut steps) = self.steps.lock() {
                    steps.insert(job.clone(), index + 1);
                }
                let text = self.styled("1", &format!("▶ step {}: {name}", index + 1));
                self.line(job, &text);
            }
            Event::StepFinished {
                job,
                name,
                status,
                exit_code,
                took,
                ..
            } => {
                let took = seconds(*took);
                let text = if *status == Status::Success {
                    self.styled("32", &format!("✓ {name} ({took})"))
                } else {
                    let code = exit_code.map(|c| format!(", exit {c}")).unwrap_or_default();
                    self.styled("31", &format!("✗ {name}: {status}{code} ({took})"))
                };
                self.line(job, &text);
            }
            Event::JobFinished {
                job,
                status,
                reason,
                ..
            } => {
                if let Ok(mut r) = self.running.lock() {
                    r.remove(job);
                }
                if let Ok(mut steps) = self.steps.lock() {
                    steps.remove(job);
                }
                self.update_status();
                if *status != Status::Success {
                    let why = reason.as_deref().unwrap_or("");
                    let text = self.styled(
                        "31",
                        &format!("✗ job {status}: {}", for_terminal(why.as_bytes(), false)),
                    );
                    self.line(job, &text);
                }
            }
            Event::JobSkipped { job, because } => {
                let text = self.styled("33", &format!("⊘ skipped: {because}"));
                self.line(job, &text);
            }
            Event::TeardownFailed { job, pids, cgroups } => {
                let text = self.styled(
                    "31",
                    &format!("! teardown left processes {pids:?} and cgroups {cgroups:?} behind"),
                );
                self.line(job, &text);
            }
            Event::RunStarted { degraded, .. } => {
                for d in degraded {
                    self.print(&self.styled("33", &format!("warning: degraded: {d}")));
                }
            }
            Event::SecretLeased { job, name, .. } => {
                let text = self.styled("2", &format!("🔑 secret {name} leased"));
                self.line(job, &text);
            }
            Event::MaskRefused { job, reason } => {
                let text = self.styled("33", &format!("warning: mask refused: {reason}"));
                self.line(job, &text);
            }
            Event::OutputLimited { job, limit } => {
                let what = format!(
                    "warning: output past {} is not kept or shown; the job runs on (--max-output)",
                    spec::format_size(*limit)
                );
                self.line(job, &self.styled("33", &what));
            }
            Event::OutputDropped { job, bytes } => {
                let what = format!("warning: {} of output dropped", spec::format_size(*bytes));
                self.line(job, &self.styled("33", &what));
            }
            Event::Egress {
                job,
                host,
                port,
                allowed: false,
                detail,
                ..
            } => {
                let what = format!("⛔ egress denied: {host}:{port}: {detail}");
                let text = self.styled("33", &for_terminal(what.as_bytes(), false));
                self.line(job, &text);
            }
            Event::Alert {
                job,
                rule,
                severity,
                action,
                summary,
                ..
            } => {
                let kill = if action == "kill" { ", containing" } else { "" };
                let what = format!("🚨 alert [{severity}] {rule}{kill}: {summary}");
                let text = self.styled("31", &for_terminal(what.as_bytes(), false));
                self.line(job, &text);
            }
            Event::Contained {
                job,
                rule,
                processes,
                took,
                ..
            } => {
                let what = format!(
                    "⛔ contained by rule {rule}: froze and killed {} process(es), revoked its leases ({} ms)",
                    processes.len(),
                    took.as_millis()
                );
                let text = self.styled("31", &what);
                self.line(job, &text);
            }
            Event::SandboxReady { .. }
            | Event::AlertsSuppressed { .. }
            | Event::JobActivity { .. }
            | Event::Egress { .. }
            | Event::RunFinished { .. }
            | Event::MaskAdded { .. }
            | Event::SecretRevoked { .. } => {}
        }
    }

    fn output(&self, job: &str, lines: &[Line<'_>]) {
        let prefix = self.prefix(job);
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        for line in lines {
            pending.text.extend_from_slice(prefix.as_bytes());
            pending.text.push(b' ');
            push_for_terminal(line.text, self.tty, &mut pending.text);
            pending.text.push(b'\n');
            if pending.text.len() >= MAX_PENDING {
                self.write_out(&mut pending);
            }
        }
        if pending.text.is_empty() {
            return;
        }
        // One clock read per batch: a batch takes far less than MAX_DELAY.
        let since = *pending.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= MAX_DELAY {
            self.write_out(&mut pending);
        }
    }

    fn flush(&self) {
        if let Ok(mut pending) = self.pending.lock() {
            self.write_out(&mut pending);
        }
    }
}

/// The summary table printed after a run.
pub fn summary(report: &RunReport, home: &std::path::Path) -> String {
    let width = report
        .jobs
        .iter()
        .map(|j| j.id.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let mut out = format!(
        "\n{:<width$}  {:<9}  {:>9}  {:>4}  {}\n",
        "JOB", "STATUS", "DURATION", "EXIT", "REASON"
    );
    for job in &report.jobs {
        let duration = if job.status == Status::Skipped {
            "-".to_string()
        } else {
            seconds(Duration::from_millis(job.duration_ms))
        };
        let exit = job
            .exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let reason = for_terminal(job.reason.as_deref().unwrap_or("").as_bytes(), false);
        out.push_str(&format!(
            "{:<width$}  {:<9}  {:>9}  {:>4}  {}\n",
            job.id,
            job.status.as_str(),
            duration,
            exit,
            reason
        ));
    }
    let run_dir = home.join("runs").join(report.run.to_string());
    out.push_str(&format!(
        "\nrun {}: {} in {} · logs: airlock logs {} · files: {}\n",
        report.run,
        report.status,
        seconds(Duration::from_millis(report.duration_ms)),
        report.run,
        run_dir.display()
    ));
    out
}

/// `1234 ms` -> `1.2s`.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}
