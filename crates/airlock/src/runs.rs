//! `airlock runs list|show` and `airlock logs`: reading past runs.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use state::{RunId, Store};

use crate::exit::{Exit, EXIT_OK};
use crate::sanitize::for_terminal;
use crate::ui::seconds;

/// `airlock runs ...`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List past runs, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: its jobs, steps, exit codes and reasons, egress,
    /// alerts, incidents, processes and workspace files. RUN may be
    /// `latest`.
    Show {
        /// Run id.
        run: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `runs` subcommand.
pub fn runs(store: &Store, command: RunsCommand) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    match command {
        RunsCommand::List { limit, json } => {
            let runs = store.list_runs(limit)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&runs)?)?;
                return Ok(EXIT_OK);
            }
            writeln!(
                out,
                "{:>5}  {:<20}  {:<9}  {:<24}  {:>9}  JOBS",
                "RUN", "PIPELINE", "STATUS", "STARTED", "DURATION"
            )?;
            for r in runs {
                writeln!(
                    out,
                    "{:>5}  {:<20}  {:<9}  {:<24}  {:>9}  {}/{} ok",
                    r.id,
                    r.pipeline,
                    r.status.as_str(),
                    r.started_at.to_string(),
                    duration(r.duration_ms),
                    r.jobs_succeeded,
                    r.jobs_total
                )?;
            }
        }
        RunsCommand::Show { run, json } => {
            let id = run_id(store, &run)?;
            let record = store
                .get_run(id)?
                .ok_or_else(|| Exit::bad_input(format!("no run {id}")))?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&record)?)?;
                return Ok(EXIT_OK);
            }
            let s = &record.summary;
            writeln!(
                out,
                "run {}  pipeline {}  file {}\nstatus {}  exit {}  started {}  duration {}\n",
                s.id,
                s.pipeline,
                s.file.display(),
                s.status,
                s.exit_code.map_or("-".into(), |c| c.to_string()),
                s.started_at,
                duration(s.duration_ms)
            )?;
            for job in &record.jobs {
                let exit = job.exit_code.map_or("-".into(), |c| c.to_string());
                writeln!(
                    out,
                    "job {}  {}  exit {}  {}",
                    job.id,
                    job.status,
                    exit,
                    duration(job.duration_ms)
                )?;
                if let Some(reason) = &job.reason {
                    writeln!(
                        out,
                        "    reason: {}",
                        for_terminal(reason.as_bytes(), false)
                    )?;
                }
                for step in &job.steps {
                    let exit = step.exit_code.map_or("-".into(), |c| c.to_string());
                    writeln!(
                        out,
                        "    {}. {:<40}  {:<9}  exit {:>3}  {}",
                        step.index + 1,
                        for_terminal(step.name.as_bytes(), false),
                        step.status.as_str(),
                        exit,
                        duration(step.duration_ms)
                    )?;
                }
                if let Some(cut) = job.output_cut {
                    writeln!(out, "    log: {}", cut_line(cut))?;
                }
                if !job.artifacts.is_empty() {
                    writeln!(out, "    artifacts: {}", job.artifacts.join(", "))?;
                }
                if !job.egress.is_empty() {
                    writeln!(out, "    egress:")?;
                }
                for e in &job.egress {
                    writeln!(out, "      {}", egress_line(e))?;
                }
                monitoring(&mut out, job)?;
            }
        }
    }
    Ok(EXIT_OK)
}

/// Where a job's log was cut, for `runs show`.
fn cut_line(cut: state::OutputCut) -> String {
    let limit = spec::format_size(cut.limit);
    if cut.dropped == 0 {
        format!("cut at {limit} (--max-output): the output past it was not kept")
    } else {
        format!(
            "cut at {limit} (--max-output): {} more output was not kept",
            spec::format_size(cut.dropped)
        )
    }
}

/// Most processes `runs show` lists per job (`--json` has them all).
const SHOWN_PROCESSES: usize = 20;

/// A job's alerts, incidents, processes and files for `runs show`. All of
/// it comes from the job, so it is made safe for a terminal.
fn monitoring(out: &mut impl Write, job: &state::JobRecord) -> Result<()> {
    let safe = |t: &str| for_terminal(t.as_bytes(), false);
    if !job.alerts.is_empty() {
        writeln!(out, "    alerts:")?;
    }
    for a in &job.alerts {
        writeln!(
            out,
            "      {:<8}  {}{}  {}",
            a.severity.to_uppercase(),
            a.rule,
            if a.action == "kill" { " (kill)" } else { "" },
            safe(&a.summary)
        )?;
    }
    for i in &job.incidents {
        writeln!(
            out,
            "    incident: contained by rule {} in {} ms: {}",
            i.rule,
            i.took_ms,
            safe(&i.summary)
        )?;
        for p in &i.processes {
            writeln!(
                out,
                "      pid {:>5}  ppid {:>5}  uid {:>5}  {}  {}",
                p.pid,
                p.ppid,
                p.uid,
                safe(&p.path),
                safe(&p.argv)
            )?;
        }
    }
    if job.execs > 0 {
        let lost = if job.execs_lost > 0 {
            format!(
                " (and {} exec events the kernel dropped: the watch fell behind)",
                job.execs_lost
            )
        } else {
            String::new()
        };
        writeln!(out, "    processes: {} execs{lost}", job.execs)?;
        process_lines(
            out,
            &job.processes[..job.processes.len().min(SHOWN_PROCESSES)],
        )?;
        let more = job.execs.saturating_sub(SHOWN_PROCESSES as u64);
        if more > 0 {
            writeln!(out, "      ... {more} more (--json lists the first 1000)")?;
        }
    }
    if !job.files.is_empty() {
        writeln!(out, "    workspace files: {}", job.files.len())?;
        for f in job.files.iter().take(SHOWN_PROCESSES) {
            writeln!(
                out,
                "      {}  {} B{}",
                safe(&f.path),
                f.size,
                if f.executable { "  (executable)" } else { "" }
            )?;
        }
    }
    Ok(())
}

/// One line per process: its pid and arguments, marked `*` where the
/// arguments were read after the exec (and may be a rewrite), with a
/// legend if any is. The arguments are the job's: made safe for a
/// terminal.
fn process_lines(out: &mut impl Write, processes: &[state::Process]) -> Result<()> {
    for p in processes {
        let late = if p.argv_at_exec { ' ' } else { '*' };
        let argv = for_terminal(p.argv.as_bytes(), false);
        writeln!(out, "      {:>5} {late} {argv}", p.pid)?;
    }
    if processes.iter().any(|p| !p.argv_at_exec) {
        writeln!(
            out,
            "      (*: arguments read from /proc after the exec; the program may have \
             rewritten them)"
        )?;
    }
    Ok(())
}

/// One egress connection for `runs show`: decision, kind, where, and
/// then the address, bytes and time, or why it was denied. Host and
/// reason come from the job, so they are made safe for a terminal.
fn egress_line(e: &state::Egress) -> String {
    let target = for_terminal(format!("{}:{}", e.host, e.port).as_bytes(), false);
    let detail = for_terminal(e.detail.as_bytes(), false);
    if e.allowed {
        let addr = e
            .addr
            .as_deref()
            .map(|a| format!(" -> {a}"))
            .unwrap_or_default();
        format!(
            "allowed  {:<7}  {target}{addr}  up {} B  down {} B  {}  (rule {detail})",
            e.kind,
            e.bytes_up,
            e.bytes_down,
            duration(Some(e.duration_ms))
        )
    } else {
        format!("DENIED   {:<7}  {target}  {detail}", e.kind)
    }
}

/// `airlock logs RUN[/JOB]`.
pub fn logs(store: &Store, target: &str) -> Result<i32> {
    let (run, job) = match target.split_once('/') {
        Some((run, job)) => (run, Some(job)),
        None => (target, None),
    };
    let id = run_id(store, run)?;
    let record = store
        .get_run(id)?
        .ok_or_else(|| Exit::bad_input(format!("no run {id}")))?;
    if let Some(job) = job {
        if !record.jobs.iter().any(|j| j.id == job) {
            let known: Vec<&str> = record.jobs.iter().map(|j| j.id.as_str()).collect();
            return Err(Exit::bad_input(format!(
                "run {id} has no job {job:?} (jobs: {})",
                known.join(", ")
            ))
            .into());
        }
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut out = std::io::stdout().lock();
    for j in record
        .jobs
        .iter()
        .filter(|j| job.is_none_or(|want| want == j.id))
    {
        let Some(path) = &j.log_path else {
            if job.is_some() {
                writeln!(out, "(job {} did not run: {})", j.id, j.status)?;
            }
            continue;
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                writeln!(out, "(no log for job {})", j.id)?;
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if job.is_none() {
            writeln!(out, "==> {} <==", j.id)?;
        }
        if tty {
            for line in bytes.split(|&b| b == b'\n') {
                writeln!(out, "{}", for_terminal(line, true))?;
            }
        } else {
            out.write_all(&bytes)?;
        }
    }
    Ok(EXIT_OK)
}

fn run_id(store: &Store, text: &str) -> Result<RunId> {
    if text == "latest" {
        return store
            .latest_run()?
            .ok_or_else(|| Exit::bad_input("there are no runs yet").into());
    }
    text.parse::<RunId>().map_err(|_| {
        Exit::bad_input(format!("{text:?} is not a run id (a number, or latest)")).into()
    })
}

fn duration(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |ms| seconds(Duration::from_millis(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: i64, argv: &str, argv_at_exec: bool) -> state::Process {
        state::Process {
            at: state::Timestamp::from_unix_millis(1_700_000_000_000),
            pid,
            ppid: 1,
            uid: 0,
            path: "/bin/sh".into(),
            argv: argv.into(),
            argv_at_exec,
        }
    }

    fn lines(processes: &[state::Process]) -> String {
        let mut out = Vec::new();
        process_lines(&mut out, processes).expect("write");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn arguments_read_after_the_exec_are_marked_with_a_legend() {
        let text = lines(&[process(2, "sh -c x", true), process(3, "innocent", false)]);
        assert_eq!(
            text,
            "          2   sh -c x\n          3 * innocent\n      \
             (*: arguments read from /proc after the exec; the program may have rewritten them)\n"
        );
        // All read at the exec: no marks, no legend.
        assert_eq!(
            lines(&[process(2, "sh -c x", true)]),
            "          2   sh -c x\n"
        );
    }
}
