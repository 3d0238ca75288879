//! `airlock`: a secure CI/CD job runner. This binary is thin: it parses the
//! command line, wires the crates together and maps errors to exit codes.

mod exit;
mod home;
mod runs;
mod sanitize;
mod ui;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::exit::{Exit, EXIT_INTERNAL};

/// Airlock runs CI jobs in locked-down sandboxes: fresh namespaces, a
/// read-only root, no network, and nothing that outlives its job.
#[derive(Debug, Parser)]
#[command(name = "airlock", version, about, long_about = None)]
#[command(
    after_help = "Exit codes of `airlock run`: 0 every job succeeded; 1 a job failed \
(non-zero step, timeout, cancelled); 2 bad input (invalid pipeline, unknown secret, bad flag); \
3 refused (a required isolation layer is unavailable); 70 internal error."
)]
struct Cli {
    /// State directory [default: $AIRLOCK_HOME, else /var/lib/airlock for
    /// root, else $XDG_DATA_HOME/airlock]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// Layers an operator may explicitly allow to run degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Degradable {
    /// Resource limits through cgroups.
    Cgroups,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline: every job in its own sandbox, in dependency order.
    ///
    /// Steps of a job run in order in one sandbox, each as `/bin/sh -e -c
    /// SCRIPT`: a step fails at its first failing command, and the job stops
    /// at its first failing step. Jobs with no dependency path between them
    /// run in parallel. A job whose need did not succeed is skipped.
    Run {
        /// Pipeline file.
        #[arg(default_value = "airlock.yml")]
        file: PathBuf,
        /// Run only this job and the jobs it needs (repeatable).
        #[arg(long = "job", value_name = "ID")]
        jobs: Vec<String>,
        /// Most jobs running at once [default: number of CPUs].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        parallel: Option<u16>,
        /// Print one JSON result document on stdout (live output goes to
        /// stderr).
        #[arg(long)]
        json: bool,
        /// Run even though this isolation layer is unavailable on this host,
        /// instead of refusing (exit 3). The choice is shown and recorded in
        /// the run. `cgroups`: no memory, cpu or pids limits (e.g. rootless
        /// without a delegated cgroup v2 subtree).
        #[arg(long = "allow-degraded", value_name = "LAYER")]
        allow_degraded: Vec<Degradable>,
    },
    /// Report which isolation layers this host supports, how, or why not.
    ///
    /// Every answer comes from trying: kernel interfaces are probed and a
    /// sandbox with every layer runs /bin/true. Exits 3 if a layer is
    /// unavailable.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a pipeline file without running it.
    Validate {
        /// Pipeline file.
        file: PathBuf,
    },
    /// Past runs.
    Runs {
        #[command(subcommand)]
        command: runs::RunsCommand,
    },
    /// Print the stored (redacted) log of a run, or of one job: RUN or RUN/JOB.
    /// RUN may be `latest`.
    Logs {
        /// RUN or RUN/JOB.
        target: String,
    },
}

fn main() -> ExitCode {
    // The sandbox init is this binary re-executed; it must branch off before
    // anything else happens.
    sandbox::run_if_init();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();

    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = exit::code_of(&e);
            if code == EXIT_INTERNAL {
                eprintln!("airlock: internal error: {e:#}");
            } else {
                eprintln!("airlock: {e:#}");
            }
            code
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(70))
}

fn dispatch(cli: Cli) -> Result<i32> {
    let home = home::resolve(cli.home)?;
    match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Doctor { json } => doctor(json),
        Command::Run {
            file,
            jobs,
            parallel,
            json,
            allow_degraded,
        } => run(&home, &file, jobs, parallel, json, &allow_degraded),
        Command::Runs { command } => runs::runs(&open_store(&home)?, command),
        Command::Logs { target } => runs::logs(&open_store(&home)?, &target),
    }
}

/// Opens the state store and marks runs whose runner died as lost.
fn open_store(home: &Path) -> Result<state::Store> {
    let store = state::Store::open(home)
        .with_context(|| format!("cannot open the state directory {}", home.display()))?;
    for run in store.recover_lost_runs()? {
        eprintln!("airlock: run {run} was left behind by a runner that died; marked lost");
        remove_partial_artifacts(&store.run_dir(run));
    }
    // Processes of a dead runner's jobs died with it (parent-death signal);
    // its cgroups are still there. Only root can see and remove them.
    if rustix::process::geteuid().is_root() {
        match sandbox::cgroup::recover() {
            Ok(removed) if !removed.is_empty() => eprintln!(
                "airlock: removed {} cgroup(s) left by a runner that died: {}",
                removed.len(),
                removed.join(", ")
            ),
            Ok(_) => {}
            Err(e) => eprintln!("airlock: warning: cannot check for leftover cgroups: {e}"),
        }
    }
    Ok(store)
}

fn doctor(json: bool) -> Result<i32> {
    let checks = sandbox::doctor::checks();
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&checks)?)?;
    } else {
        for c in &checks {
            let verdict = if c.ok { "ok" } else { "MISSING" };
            writeln!(out, "{:<12} {:<7} {}", c.layer, verdict, c.detail)?;
        }
    }
    Ok(if checks.iter().all(|c| c.ok) {
        exit::EXIT_OK
    } else {
        exit::EXIT_REFUSED
    })
}

/// Removes half-copied artifact sets (`artifacts/.JOB.partial`) of a run
/// whose runner died while copying.
fn remove_partial_artifacts(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir.join("artifacts")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".partial") {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                eprintln!(
                    "airlock: warning: cannot remove {}: {e}",
                    entry.path().display()
                );
            }
        }
    }
}

fn validate(file: &Path) -> Result<i32> {
    let pipeline = spec::load(file)?;
    let steps: usize = pipeline.jobs.iter().map(|j| j.steps.len()).sum();
    println!(
        "{}: ok: pipeline {:?}, {} job(s), {} step(s)",
        file.display(),
        pipeline.name,
        pipeline.jobs.len(),
        steps
    );
    Ok(exit::EXIT_OK)
}

fn run(
    home: &Path,
    file: &Path,
    jobs: Vec<String>,
    parallel: Option<u16>,
    json: bool,
    allow_degraded: &[Degradable],
) -> Result<i32> {
    let parallel = parallel.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    std::thread::scope(|scope| {
        // The first job's sandbox starts before anything else, so that
        // reading the pipeline and the state overlaps with it. Whether it
        // gets a cgroup is a guess (root can make them) that the engine
        // checks before it uses the spare.
        let cgroups = rustix::process::geteuid().is_root();
        let spares =
            engine::Spares::start(scope, parallel, sandbox::Layers::default(), cgroups).ok();
        let result = run_pipeline(
            home,
            file,
            jobs,
            parallel,
            json,
            allow_degraded,
            spares.as_ref(),
        );
        if let Some(spares) = &spares {
            spares.close();
        }
        result
    })
}

fn run_pipeline(
    home: &Path,
    file: &Path,
    jobs: Vec<String>,
    parallel: usize,
    json: bool,
    allow_degraded: &[Degradable],
    spares: Option<&engine::Spares>,
) -> Result<i32> {
    let pipeline = spec::load(file)?;
    let store = open_store(home)?;
    let order = if jobs.is_empty() {
        pipeline.topo_order()
    } else {
        pipeline
            .select(&jobs)
            .map_err(|e| Exit::bad_input(e.to_string()))?
    };
    let ids: Vec<String> = order
        .iter()
        .filter_map(|&i| pipeline.jobs.get(i))
        .map(|j| j.id.clone())
        .collect();

    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal ends airlock at once; the sandboxes die with it
        // (parent-death signal) and the next command marks the run lost.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&cancel))
            .context("cannot install a signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&cancel))
            .context("cannot install a signal handler")?;
    }

    let stream = if json {
        ui::Stream::Stderr
    } else {
        ui::Stream::Stdout
    };
    let terminal = ui::Terminal::new(stream, &ids);
    let options = engine::RunOptions {
        jobs,
        parallel,
        allow_degraded_cgroups: allow_degraded.contains(&Degradable::Cgroups),
    };
    let result = engine::run(&pipeline, &options, &store, &[&terminal], &cancel, spares);
    terminal.finish();
    let report = result?;

    let summary = ui::summary(&report, store.home());
    if json {
        eprint!("{summary}");
        let doc = serde_json::to_string_pretty(&report)?;
        let _ = writeln!(std::io::stdout().lock(), "{doc}");
    } else {
        let _ = write!(std::io::stdout().lock(), "{summary}");
    }
    Ok(report.exit_code)
}
