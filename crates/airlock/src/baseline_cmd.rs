//! `airlock baseline show|reset`: what earlier successful runs of each job
//! used, which detection rules compare new runs with.

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use state::Store;

use crate::exit::{Exit, EXIT_OK};
use crate::sanitize::for_terminal;

/// `airlock baseline ...`
#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Show the endpoints and binaries learned per pipeline and job.
    ///
    /// A job's baseline is what its successful runs used: the endpoints its
    /// egress proxy allowed and the executables it ran. Once a job has two
    /// successful runs, an endpoint or binary not in its baseline raises an
    /// alert (rules `new-endpoint`, `new-binary`).
    Show {
        /// PIPELINE or PIPELINE/JOB [default: every baseline].
        target: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget the baseline of a pipeline (every job) or of one job; the
    /// next successful runs learn it again. Recorded in the audit log.
    Reset {
        /// PIPELINE or PIPELINE/JOB.
        target: String,
    },
}

/// Runs a `baseline` subcommand; `audit` records a reset.
pub fn baseline(
    store: &Store,
    command: BaselineCommand,
    audit: &dyn Fn(&str, serde_json::Value),
) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    match command {
        BaselineCommand::Show { target, json } => {
            let (pipeline, job) = match &target {
                Some(t) => split(t)?,
                None => (None, None),
            };
            let baselines = store.baselines(pipeline, job)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&baselines)?)?;
                return Ok(EXIT_OK);
            }
            if baselines.is_empty() {
                writeln!(out, "no baseline yet: successful runs build one")?;
            }
            for b in &baselines {
                let state = if b.runs >= 2 {
                    "established"
                } else {
                    "learning"
                };
                writeln!(
                    out,
                    "{}/{}  {} successful run(s), {state}",
                    b.pipeline, b.job, b.runs
                )?;
                for e in &b.endpoints {
                    writeln!(out, "    endpoint  {}", for_terminal(e.as_bytes(), false))?;
                }
                for bin in &b.binaries {
                    writeln!(out, "    binary    {}", for_terminal(bin.as_bytes(), false))?;
                }
            }
        }
        BaselineCommand::Reset { target } => {
            let (Some(pipeline), job) = split(&target)? else {
                return Err(
                    Exit::bad_input("baseline reset needs PIPELINE or PIPELINE/JOB").into(),
                );
            };
            let removed = store.reset_baseline(pipeline, job)?;
            audit(
                "baseline_reset",
                serde_json::json!({ "pipeline": pipeline, "job": job, "jobs": removed }),
            );
            writeln!(out, "reset {removed} baseline(s) of {target}")?;
        }
    }
    Ok(EXIT_OK)
}

/// `PIPELINE[/JOB]`.
fn split(target: &str) -> Result<(Option<&str>, Option<&str>)> {
    let (pipeline, job) = match target.split_once('/') {
        Some((p, j)) => (p, Some(j)),
        None => (target, None),
    };
    if pipeline.is_empty() || job.is_some_and(str::is_empty) {
        return Err(Exit::bad_input(format!("{target:?} is not PIPELINE or PIPELINE/JOB")).into());
    }
    Ok((Some(pipeline), job))
}
