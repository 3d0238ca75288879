//! The scheduler: runs the selected jobs of a pipeline in dependency order,
//! in parallel where the graph allows, and records everything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

use crate::spares::Spares;
use secrets::SecretStore;
use std::time::{Duration, Instant};

use serde::Serialize;
use spec::Pipeline;
use state::{NewJob, NewRun, RunId, Status, Store};

use crate::error::{EngineError, Refusal};
use crate::event::{Bus, Event, Subscriber};
use crate::job::{run_job, JobContext, JobOutcome};
use crate::plan::{admit, plan_job, JobPlan};
use crate::record::{LogFiles, Recorder};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run only these jobs and what they need (all when empty).
    pub jobs: Vec<String>,
    /// Most jobs running at once (at least 1).
    pub parallel: usize,
    /// Run without cgroups (no resource limits) if they are unavailable,
    /// instead of refusing. The choice is recorded in the run.
    pub allow_degraded_cgroups: bool,
    /// The DNS server the egress proxy asks (the host's resolver, through
    /// getaddrinfo, when `None`).
    pub egress_dns: Option<std::net::SocketAddr>,
    /// Detection rules for every job; `None` turns monitoring off (the
    /// run records that as a degraded layer).
    pub rules: Option<std::sync::Arc<monitor::Rules>>,
    /// Most bytes of output a job may have kept, over all its steps: its
    /// log file and the live output stop there, and the job runs on (see
    /// [`DEFAULT_MAX_OUTPUT`]).
    pub max_output: u64,
}

/// [`RunOptions::max_output`] unless the operator says otherwise: the host's
/// disk, not the job's, holds the log, so a job printing in a loop for its
/// whole timeout must not fill it.
pub const DEFAULT_MAX_OUTPUT: u64 = 2 << 30;

/// Exit code of `airlock run` when every job succeeded.
pub const EXIT_OK: i32 = 0;
/// A job failed, timed out, was skipped or cancelled.
pub const EXIT_JOB_FAILED: i32 = 1;
/// Bad input: invalid pipeline, unknown secret, bad flag.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Refused: a required isolation layer is unavailable, or policy denied.
pub const EXIT_REFUSED: i32 = 3;
/// Internal error.
pub const EXIT_INTERNAL: i32 = 70;

/// The result of a run, as `airlock run --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Run id.
    pub run: RunId,
    /// Pipeline name.
    pub pipeline: String,
    /// Final status.
    pub status: Status,
    /// Exit code of `airlock run`.
    pub exit_code: i32,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Jobs in the order they were scheduled.
    pub jobs: Vec<JobReport>,
}

/// One job's result.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// Job id.
    pub id: String,
    /// Final status.
    pub status: Status,
    /// Exit code of the failing step, or 0.
    pub exit_code: Option<i32>,
    /// Why it did not succeed.
    pub reason: Option<String>,
    /// Wall time in milliseconds (0 if it did not run).
    pub duration_ms: u64,
}

/// Runs `pipeline` and records it in `store`. `subscribers` see every event
/// and output line (the terminal display, for instance). `cancel` stops the
/// run: running sandboxes are killed, pending jobs are not started. `spares`
/// is a pool the caller started early (see [`Spares`]); without one, the
/// run starts its own.
pub fn run(
    pipeline: &Pipeline,
    options: &RunOptions,
    store: &Store,
    subscribers: &[&dyn Subscriber],
    cancel: &AtomicBool,
    spares: Option<&Spares>,
    secrets: Option<&SecretStore>,
) -> Result<RunReport, EngineError> {
    let order = if options.jobs.is_empty() {
        pipeline.topo_order()
    } else {
        pipeline
            .select(&options.jobs)
            .map_err(|e| Refusal::BadInput(e.to_string()))?
    };
    admit(pipeline, &order, secrets)?;
    let mut degraded = Vec::new();
    if options.rules.is_none() {
        degraded.push(
            "monitor: off (--no-monitor); execs, samples and detection rules are not watched"
                .to_string(),
        );
    }
    let cgroups = match probe_cgroups() {
        Ok(()) => true,
        Err(why) if options.allow_degraded_cgroups => {
            degraded.push(format!(
                "cgroups: {why}; resource limits are not enforced (allowed by --allow-degraded cgroups)"
            ));
            false
        }
        Err(why) => {
            return Err(Refusal::Unavailable(format!(
                "cgroups are unavailable ({why}), so memory, cpu and pids limits cannot be enforced; run as root, or pass --allow-degraded cgroups to run without them"
            ))
            .into())
        }
    };
    let plans = order
        .iter()
        .filter_map(|&i| pipeline.jobs.get(i))
        .map(|job| plan_job(pipeline, job))
        .collect::<Result<Vec<_>, _>>()?;

    let parallel = options.parallel.max(1);
    let go = |spares: &Spares| {
        spares.expect(plans.len());
        let env = Env {
            store,
            subscribers,
            cancel,
            cgroups,
            spares,
            secrets,
            resolver: match options.egress_dns {
                Some(server) => net::Resolver::Nameserver(server),
                None => net::Resolver::System,
            },
            rules: options.rules.as_deref(),
            max_output: options.max_output,
        };
        record_and_schedule(pipeline, &plans, parallel, degraded, env)
    };
    if let Some(spares) = spares {
        return go(spares);
    }
    std::thread::scope(|scope| {
        // Spares start now, so that recording the run overlaps with them.
        let layers = plans.first().map(|p| p.sandbox.layers).unwrap_or_default();
        let spares = Spares::start(scope, parallel, layers, cgroups)?;
        let report = go(&spares);
        spares.close();
        report
    })
}

/// What a run draws on besides its plans.
struct Env<'a> {
    store: &'a Store,
    subscribers: &'a [&'a dyn Subscriber],
    cancel: &'a AtomicBool,
    cgroups: bool,
    spares: &'a Spares,
    secrets: Option<&'a SecretStore>,
    /// Where egress proxies resolve names.
    resolver: net::Resolver,
    /// Detection rules, if monitoring is on.
    rules: Option<&'a monitor::Rules>,
    /// Most output bytes kept per job.
    max_output: u64,
}

/// Records the run, runs its jobs and records their outcome.
fn record_and_schedule(
    pipeline: &Pipeline,
    plans: &[JobPlan],
    parallel: usize,
    degraded: Vec<String>,
    env: Env<'_>,
) -> Result<RunReport, EngineError> {
    let Env {
        store,
        subscribers,
        cancel,
        cgroups,
        spares,
        secrets,
        resolver,
        rules,
        max_output,
    } = env;
    let run = store.begin_run(&NewRun {
        pipeline: pipeline.name.clone(),
        file: pipeline.file.clone(),
        degraded: degraded.clone(),
        jobs: plans
            .iter()
            .map(|p| NewJob {
                id: p.id.clone(),
                needs: p.needs.clone(),
                steps: p.steps.iter().map(|s| s.name.clone()).collect(),
            })
            .collect(),
    })?;
    let run_dir = store.run_dir(run);
    let logs = LogFiles::new(&run_dir.join("logs"));
    let recorder = Recorder {
        store,
        run,
        pipeline: &pipeline.name,
        learned: Mutex::new(HashMap::new()),
        logs: &logs,
        artifacts: plans
            .iter()
            .map(|p| (p.id.clone(), p.artifacts.clone()))
            .collect(),
        error: Mutex::new(None),
    };
    let mut all: Vec<&dyn Subscriber> = vec![&recorder, &logs];
    all.extend_from_slice(subscribers);
    let bus = Bus::new(all);

    let started = Instant::now();
    bus.emit(Event::RunStarted {
        run,
        pipeline: pipeline.name.clone(),
        jobs: plans.iter().map(|p| p.id.clone()).collect(),
        degraded: degraded.clone(),
    });
    let ctx = JobContext {
        bus: &bus,
        run,
        run_dir: &run_dir,
        cancel,
        killers: &Mutex::new(Vec::new()),
        cgroups,
        spares,
        secrets,
        pipeline: &pipeline.name,
        resolver,
        rules,
        store,
        max_output,
    };
    let outcomes = schedule(plans, parallel, &ctx)?;
    // Every job revokes its own leases as it ends; this catches any the
    // run left behind (a job thread that failed to), whatever happened.
    if let Some(store) = secrets {
        if let Err(e) = store.revoke_run(run) {
            tracing::error!("cannot revoke the leases of run {run}: {e}");
        }
    }

    let mut jobs = Vec::with_capacity(plans.len());
    let mut refused = false;
    for plan in plans {
        let (outcome, took) = outcomes.get(&plan.id).cloned().unwrap_or_else(|| {
            (
                JobOutcome {
                    status: Status::Cancelled,
                    exit_code: None,
                    reason: Some("cancelled".into()),
                    refused: false,
                },
                Duration::ZERO,
            )
        });
        refused |= outcome.refused;
        jobs.push(JobReport {
            id: plan.id.clone(),
            status: outcome.status,
            exit_code: outcome.exit_code,
            reason: outcome.reason,
            duration_ms: millis(took),
        });
    }
    let all_ok = jobs.iter().all(|j| j.status == Status::Success);
    let (status, exit_code) = if all_ok {
        (Status::Success, EXIT_OK)
    } else if cancel.load(Ordering::SeqCst) {
        (Status::Cancelled, EXIT_JOB_FAILED)
    } else if refused {
        (Status::Failed, EXIT_REFUSED)
    } else {
        (Status::Failed, EXIT_JOB_FAILED)
    };
    let took = started.elapsed();
    bus.emit(Event::RunFinished {
        run,
        status,
        exit_code,
        took,
    });
    if let Some(e) = recorder.error.lock().ok().and_then(|mut e| e.take()) {
        return Err(EngineError::State(e));
    }
    Ok(RunReport {
        run,
        pipeline: pipeline.name.clone(),
        status,
        exit_code,
        duration_ms: millis(took),
        jobs,
    })
}

/// Where a job stands in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Waiting,
    Running,
    Done(Status),
}

/// Starts every job whose needs have succeeded, at most `parallel` at a
/// time, marks as skipped every job with a need that did not succeed, and
/// returns when nothing is left to start or running.
fn schedule(
    plans: &[JobPlan],
    parallel: usize,
    ctx: &JobContext<'_>,
) -> Result<HashMap<String, (JobOutcome, Duration)>, EngineError> {
    let mut slots: HashMap<&str, Slot> = plans
        .iter()
        .map(|p| (p.id.as_str(), Slot::Waiting))
        .collect();
    let mut outcomes = HashMap::new();
    let (done_tx, done_rx) = mpsc::channel::<(String, JobOutcome, Duration)>();
    std::thread::scope(|scope| -> Result<(), EngineError> {
        let mut running = 0usize;
        let mut cancelled = false;
        loop {
            if !cancelled && ctx.cancel.load(Ordering::SeqCst) {
                cancelled = true;
                if let Ok(k) = ctx.killers.lock() {
                    for (_, killer) in k.iter() {
                        killer.kill();
                    }
                }
            }
            // Skip what can no longer run; start what can.
            for plan in plans {
                if slots.get(plan.id.as_str()) != Some(&Slot::Waiting) {
                    continue;
                }
                let failed_need = plan.needs.iter().find(|n| {
                    matches!(slots.get(n.as_str()), Some(Slot::Done(s)) if *s != Status::Success)
                });
                if let Some(need) = failed_need {
                    let because = format!("needs {need:?}, which did not succeed");
                    ctx.bus.emit(Event::JobSkipped {
                        job: plan.id.clone(),
                        because: because.clone(),
                    });
                    slots.insert(&plan.id, Slot::Done(Status::Skipped));
                    outcomes.insert(
                        plan.id.clone(),
                        (
                            JobOutcome {
                                status: Status::Skipped,
                                exit_code: None,
                                reason: Some(because),
                                refused: false,
                            },
                            Duration::ZERO,
                        ),
                    );
                    continue;
                }
                let ready = plan
                    .needs
                    .iter()
                    .all(|n| slots.get(n.as_str()) == Some(&Slot::Done(Status::Success)));
                if ready && running < parallel && !cancelled {
                    slots.insert(&plan.id, Slot::Running);
                    running += 1;
                    let tx = done_tx.clone();
                    std::thread::Builder::new()
                        .name(format!("job-{}", plan.id))
                        .spawn_scoped(scope, move || {
                            let started = Instant::now();
                            let outcome = run_job(plan, ctx);
                            let _ = tx.send((plan.id.clone(), outcome, started.elapsed()));
                        })
                        .map_err(EngineError::Thread)?;
                }
            }
            if running == 0 {
                return Ok(());
            }
            match done_rx.recv_timeout(Duration::from_millis(100)) {
                Ok((id, outcome, took)) => {
                    running -= 1;
                    if let Some(slot) = slots.get_mut(id.as_str()) {
                        *slot = Slot::Done(outcome.status);
                    }
                    outcomes.insert(id, (outcome, took));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    })?;
    Ok(outcomes)
}

/// Creates and removes a cgroup, to learn before anything runs whether
/// jobs can have one.
fn probe_cgroups() -> Result<(), String> {
    let name = sandbox::cgroup::name_for("probe", 0);
    let limits = sandbox::cgroup::Limits::default();
    let cg = sandbox::cgroup::create(&name, &limits).map_err(|e| e.to_string())?;
    cg.remove().map_err(|e| e.to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
