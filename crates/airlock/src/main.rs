//! `airlock`: a secure CI/CD job runner. This binary is thin: it parses the
//! command line, wires the crates together and maps errors to exit codes.

mod alerts;
mod audit_cmd;
mod baseline_cmd;
mod exit;
mod home;
mod runs;
mod sanitize;
mod secrets_cmd;
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
(non-zero step, timeout, cancelled, contained by a detection rule); 2 bad input (invalid pipeline, unknown secret, bad flag); \
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
pub(crate) enum Degradable {
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
        /// Key file of the secret store [default: $AIRLOCK_KEY_FILE, else
        /// HOME/keys/secrets.key].
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Run even though this isolation layer is unavailable on this host,
        /// instead of refusing (exit 3). The choice is shown and recorded in
        /// the run. `cgroups`: no memory, cpu or pids limits (e.g. rootless
        /// without a delegated cgroup v2 subtree).
        #[arg(long = "allow-degraded", value_name = "LAYER")]
        allow_degraded: Vec<Degradable>,
        /// DNS server (IP:PORT) the egress proxies of jobs with
        /// `network: { egress: [...] }` ask for the addresses of allowed
        /// names [default: the host's resolver, as getaddrinfo sees it,
        /// /etc/hosts included].
        #[arg(long, value_name = "ADDR")]
        egress_dns: Option<std::net::SocketAddr>,
        /// Directory of the operator's detection rules (`*.yaml`, the
        /// format of docs/RULES.md), loaded with the shipped ones
        /// [default: HOME/rules, if it exists].
        #[arg(long, value_name = "DIR")]
        rules: Option<PathBuf>,
        /// Turn runtime monitoring off: no exec events, samples, detection
        /// rules, baselines or containment. Shown and recorded in the run.
        #[arg(long, conflicts_with_all = ["rules", "alert_webhook", "alert_command"])]
        no_monitor: bool,
        /// POST every alert as JSON to this URL, signed with HMAC-SHA256
        /// (header X-Airlock-Signature) and retried on failure.
        #[arg(long, value_name = "URL", requires = "alert_webhook_key")]
        alert_webhook: Option<String>,
        /// The webhook's signing key: a file readable by its owner only.
        #[arg(long, value_name = "FILE", requires = "alert_webhook")]
        alert_webhook_key: Option<PathBuf>,
        /// Run this program for every alert, with the alert as JSON on
        /// stdin (no shell; AIRLOCK_ALERT_RULE, AIRLOCK_ALERT_SEVERITY,
        /// AIRLOCK_RUN and AIRLOCK_JOB in its environment).
        #[arg(long, value_name = "PROGRAM")]
        alert_command: Option<PathBuf>,
        /// Most output a job may have kept, over all its steps (a size like
        /// 512MiB). Past it the job's log and live output stop with a
        /// warning, and the job runs on, its output read and dropped: a job
        /// printing in a loop cannot fill the host's disk [default: 2GiB].
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_output: Option<u64>,
        /// The pipeline's identity: the PIPELINE that secret scopes
        /// (`PIPELINE/JOB`) and baselines are matched against. Pass it
        /// from trusted configuration when the file comes from a change
        /// you do not trust (a pull request): a file whose `name:` says
        /// otherwise is refused (exit 2) before anything runs, so that it
        /// cannot claim another pipeline's secrets or baseline [default:
        /// the file's `name:`, else its file name].
        #[arg(long = "pipeline", value_name = "NAME", value_parser = parse_pipeline_name)]
        pipeline: Option<String>,
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
    /// The encrypted secret store: set, list, rotate, rm, import, leases,
    /// rekey. Values are never printed.
    Secrets {
        /// Key file to open the store with [default: $AIRLOCK_KEY_FILE,
        /// else HOME/keys/secrets.key, created on first use].
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        #[command(subcommand)]
        command: secrets_cmd::SecretsCommand,
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
    /// The tamper-evident audit log: verify it, show it, prove an entry is
    /// in it, sign a checkpoint for a witness.
    Audit {
        #[command(subcommand)]
        command: audit_cmd::AuditCommand,
    },
    /// What earlier successful runs of each job used (endpoints, binaries):
    /// show it, or reset it.
    Baseline {
        #[command(subcommand)]
        command: baseline_cmd::BaselineCommand,
    },
}

fn main() -> ExitCode {
    // The sandbox init is this binary re-executed; it must branch off before
    // anything else happens.
    sandbox::run_if_init();
    sandbox::rlimits::raise_nofile();
    sandbox::rlimits::no_core_dumps();
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
        // The reader went away (`airlock runs show 1 --json | head`): not
        // a failure of ours, and nothing left to say (as ripgrep does).
        Err(e) if exit::is_broken_pipe(&e) => 0,
        Err(e) => {
            let code = exit::code_of(&e);
            if code == EXIT_INTERNAL {
                eprintln!("airlock: internal error: {}", exit::describe(&e));
            } else {
                eprintln!("airlock: {}", exit::describe(&e));
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
        Command::Doctor { json } => doctor(&home, json),
        Command::Run {
            file,
            jobs,
            parallel,
            json,
            key_file,
            allow_degraded,
            egress_dns,
            rules,
            no_monitor,
            alert_webhook,
            alert_webhook_key,
            alert_command,
            max_output,
            pipeline,
        } => run(
            &home,
            &file,
            RunFlags {
                jobs,
                parallel,
                json,
                key: secrets_cmd::key_source(key_file),
                allow_degraded,
                egress_dns,
                rules,
                no_monitor,
                alert_webhook: alert_webhook.zip(alert_webhook_key),
                alert_command,
                max_output: max_output.unwrap_or(engine::DEFAULT_MAX_OUTPUT),
                pipeline,
            },
        ),
        Command::Secrets { key_file, command } => {
            // Every change to the store is audited; if the audit log cannot
            // be opened, nothing is changed.
            let trail = audit_cmd::open_trail(&home, Arc::new(AtomicBool::new(false)))?;
            let store = secrets_cmd::open(&home, secrets_cmd::key_source(key_file))?
                .with_event_sink(secret_sink(&trail));
            let code = secrets_cmd::secrets(&store, command);
            trail.finish().context("cannot write the audit log")?;
            code
        }
        Command::Runs { command } => runs::runs(&open_store(&home, None)?, command),
        Command::Logs { target } => runs::logs(&open_store(&home, None)?, &target),
        Command::Audit { command } => audit_cmd::command(&home, command),
        Command::Baseline { command } => {
            let trail = audit_cmd::open_trail(&home, Arc::new(AtomicBool::new(false)))?;
            let store = open_store(&home, Some(&trail))?;
            let code = baseline_cmd::baseline(&store, command, &|kind, what| {
                trail.record(kind, &what);
            });
            trail.finish().context("cannot write the audit log")?;
            code
        }
    }
}

/// Hands the secret store's events to the audit trail, as
/// `secrets.KIND` entries.
fn secret_sink(trail: &Arc<engine::AuditTrail>) -> impl Fn(&secrets::SecretEvent) + Send + Sync {
    let trail = Arc::clone(trail);
    move |event| {
        let mut value = serde_json::to_value(event).unwrap_or_default();
        let kind = value
            .as_object_mut()
            .and_then(|m| m.remove("event"))
            .and_then(|k| k.as_str().map(str::to_string))
            .unwrap_or_default();
        trail.record(&format!("secrets.{kind}"), &value);
    }
}

/// Opens the state store and recovers from a runner that died: its runs
/// are marked lost, their leases revoked, half-copied artifacts and its
/// cgroups removed. Each recovery is audited, through `trail` or, if there
/// is none, a trail opened for it.
fn open_store(home: &Path, trail: Option<&Arc<engine::AuditTrail>>) -> Result<state::Store> {
    let store = state::Store::open(home)
        .with_context(|| format!("cannot open the state directory {}", home.display()))?;
    let lost = store.recover_lost_runs()?;
    // Processes of a dead runner's jobs died with it (parent-death signal);
    // its cgroups are still there. Only root can see and remove them.
    let mut cgroups = Vec::new();
    if rustix::process::geteuid().is_root() {
        match sandbox::cgroup::recover() {
            Ok(removed) => cgroups = removed,
            Err(e) => eprintln!("airlock: warning: cannot check for leftover cgroups: {e}"),
        }
    }
    if lost.is_empty() && cgroups.is_empty() {
        return Ok(store);
    }
    let own = match trail {
        Some(_) => None,
        None => Some(audit_cmd::open_trail(
            home,
            Arc::new(AtomicBool::new(false)),
        )?),
    };
    let Some(trail) = trail.or(own.as_ref()) else {
        return Ok(store);
    };
    for &run in &lost {
        eprintln!("airlock: run {run} was left behind by a runner that died; marked lost");
        trail.record("run_lost", &serde_json::json!({ "run": run }));
        remove_partial_artifacts(&store.run_dir(run));
    }
    revoke_leases_of(home, &lost, trail);
    if !cgroups.is_empty() {
        eprintln!(
            "airlock: removed {} cgroup(s) left by a runner that died: {}",
            cgroups.len(),
            cgroups.join(", ")
        );
        trail.record(
            "cgroups_recovered",
            &serde_json::json!({ "cgroups": cgroups }),
        );
    }
    if let Some(own) = own {
        own.finish().context("cannot write the audit log")?;
    }
    Ok(store)
}

/// One line of `airlock doctor`.
#[derive(serde::Serialize)]
struct DoctorLine {
    layer: String,
    /// The layer is there (warnings never fail the check).
    ok: bool,
    /// Something the operator should act on, though jobs still run.
    warning: bool,
    detail: String,
}

fn doctor(home: &Path, json: bool) -> Result<i32> {
    let mut lines: Vec<DoctorLine> = sandbox::doctor::checks()
        .into_iter()
        .map(|c| DoctorLine {
            layer: c.layer.to_string(),
            ok: c.ok,
            warning: false,
            detail: c.detail,
        })
        .collect();
    let all_ok = lines.iter().all(|c| c.ok);
    lines.extend(
        secrets_cmd::stale_warnings(home)
            .into_iter()
            .map(|detail| DoctorLine {
                layer: "secrets".into(),
                ok: true,
                warning: true,
                detail,
            }),
    );
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&lines)?)?;
    } else {
        for c in &lines {
            let verdict = match (c.ok, c.warning) {
                (false, _) => "MISSING",
                (true, true) => "WARNING",
                (true, false) => "ok",
            };
            writeln!(out, "{:<12} {:<7} {}", c.layer, verdict, c.detail)?;
        }
    }
    Ok(if all_ok {
        exit::EXIT_OK
    } else {
        exit::EXIT_REFUSED
    })
}

/// Revokes the secret leases of runs whose runner died (and expires any
/// lease past its time), if there is a secret store.
fn revoke_leases_of(home: &Path, lost: &[state::RunId], trail: &Arc<engine::AuditTrail>) {
    if !home.join(secrets::DB_FILE).exists() {
        return;
    }
    let key = secrets_cmd::key_source(None);
    let store = match secrets::SecretStore::open(home, key) {
        Ok(store) => store.with_event_sink(secret_sink(trail)),
        Err(e) => {
            eprintln!("airlock: warning: cannot open the secret store to revoke leases: {e}");
            return;
        }
    };
    for &run in lost {
        match store.revoke_run(run) {
            Ok(revoked) if !revoked.is_empty() => {
                eprintln!(
                    "airlock: revoked {} lease(s) of lost run {run}",
                    revoked.len()
                );
            }
            Ok(_) => {}
            Err(e) => eprintln!("airlock: warning: cannot revoke the leases of run {run}: {e}"),
        }
    }
    if let Err(e) = store.expire() {
        eprintln!("airlock: warning: cannot expire old leases: {e}");
    }
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

/// The flags of `airlock run`.
struct RunFlags {
    jobs: Vec<String>,
    parallel: Option<u16>,
    json: bool,
    key: secrets::KeySource,
    allow_degraded: Vec<Degradable>,
    egress_dns: Option<std::net::SocketAddr>,
    rules: Option<PathBuf>,
    no_monitor: bool,
    alert_webhook: Option<(String, PathBuf)>,
    alert_command: Option<PathBuf>,
    max_output: u64,
    pipeline: Option<String>,
}

/// A size flag (`512MiB`), as pipelines write sizes.
fn parse_size(text: &str) -> Result<u64, String> {
    spec::parse_size(text)
}

/// A pipeline name flag, as pipelines write names.
fn parse_pipeline_name(text: &str) -> Result<String, String> {
    if spec::is_id(text) {
        Ok(text.to_string())
    } else {
        Err("expected a pipeline name: [a-z0-9][a-z0-9_-]{0,63}".to_string())
    }
}

/// The pipeline with the identity the operator gave it (`--pipeline`),
/// refused if its file claims another one.
fn pinned(mut pipeline: spec::Pipeline, name: Option<&str>) -> Result<spec::Pipeline> {
    let Some(name) = name else {
        return Ok(pipeline);
    };
    if let Some(at) = pipeline.name_at {
        if pipeline.name != name {
            return Err(Exit::bad_input(format!(
                "{}:{}:{}: the pipeline calls itself {:?}, but this run is for {name:?} (--pipeline); refused, so that a changed file cannot claim another pipeline's secrets or baseline",
                pipeline.file.display(),
                at.line,
                at.col,
                pipeline.name,
            ))
            .into());
        }
    }
    pipeline.name = name.to_string();
    Ok(pipeline)
}

fn run(home: &Path, file: &Path, flags: RunFlags) -> Result<i32> {
    let parallel = flags.parallel.map(usize::from).unwrap_or_else(|| {
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
        let result = run_pipeline(home, file, &flags, parallel, spares.as_ref());
        if let Some(spares) = &spares {
            spares.close();
        }
        result
    })
}

fn run_pipeline(
    home: &Path,
    file: &Path,
    flags: &RunFlags,
    parallel: usize,
    spares: Option<&engine::Spares>,
) -> Result<i32> {
    let (jobs, json) = (flags.jobs.clone(), flags.json);
    let pipeline = pinned(spec::load(file)?, flags.pipeline.as_deref())?;
    let rules = if flags.no_monitor {
        None
    } else {
        Some(Arc::new(alerts::load_rules(home, flags.rules.as_deref())?))
    };
    let notifier = alerts::notifier(flags.alert_webhook.as_ref(), flags.alert_command.as_ref())?;
    // A run that cannot be audited does not start, and one whose audit
    // trail breaks is cancelled (the trail raises the cancel flag).
    let cancel = Arc::new(AtomicBool::new(false));
    let trail = audit_cmd::open_trail(home, Arc::clone(&cancel))?;
    let store = open_store(home, Some(&trail))?;
    // The secret store is opened only for pipelines that ask for secrets,
    // and only if it exists: a missing store means every secret is unknown.
    let wants_secrets = pipeline.jobs.iter().any(|j| !j.secrets.is_empty());
    let secret_store = if wants_secrets && home.join(secrets::DB_FILE).exists() {
        Some(secrets_cmd::open(home, flags.key.clone())?.with_event_sink(secret_sink(&trail)))
    } else {
        None
    };
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
        allow_degraded_cgroups: flags.allow_degraded.contains(&Degradable::Cgroups),
        egress_dns: flags.egress_dns,
        rules,
        max_output: flags.max_output,
    };
    let forwarder = alerts::Forwarder::new(notifier);
    let result = engine::run(
        &pipeline,
        &options,
        &store,
        &[&terminal, &*trail, &forwarder],
        &cancel,
        spares,
        secret_store.as_ref(),
    );
    terminal.finish();
    forwarder.finish(&trail);
    // Refusals (a denied secret, say) are audited too.
    trail.finish().context("cannot write the audit log")?;
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
