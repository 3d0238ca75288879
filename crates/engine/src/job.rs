//! Running one job: sandbox, steps in order, artifacts, teardown.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redact::Redactor;
use sandbox::cgroup::{Events, Limits};
use sandbox::{
    CgroupSpec, CommandOutcome, CommandSpec, Killer, Output, Sandbox, SandboxConfig, SandboxError,
    SecretFile,
};
use secrets::{Lease, SecretStore};
use state::Status;
use zeroize::Zeroizing;

use crate::event::{Bus, Event};
use crate::masks::Masks;
use crate::output;
use crate::plan::JobPlan;
use crate::spares::Spares;
use crate::watch::{self, JobMonitor, Probe, Setup};

/// How one job ended.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// Final status.
    pub status: Status,
    /// Exit code of the failing step, or 0 on success.
    pub exit_code: Option<i32>,
    /// Why it did not succeed.
    pub reason: Option<String>,
    /// The sandbox could not be created at all: a required isolation layer
    /// is unavailable on this host (exit 3).
    pub refused: bool,
}

/// What a job thread shares with the scheduler.
pub(crate) struct JobContext<'a> {
    pub bus: &'a Bus<'a>,
    pub run: i64,
    pub run_dir: &'a Path,
    pub cancel: &'a AtomicBool,
    /// Killers of the running sandboxes, so a cancel can stop them.
    pub killers: &'a Mutex<Vec<(String, Killer)>>,
    /// Whether jobs get a cgroup (false only in the allowed degraded mode).
    pub cgroups: bool,
    /// Sandboxes prepared ahead of time.
    pub spares: &'a Spares,
    /// The secret store, if there is one.
    pub secrets: Option<&'a SecretStore>,
    /// Pipeline name (the scope of the job's leases is `PIPELINE/JOB`).
    pub pipeline: &'a str,
    /// Where egress proxies resolve names.
    pub resolver: net::Resolver,
    /// Detection rules; `None` turns monitoring off.
    pub rules: Option<&'a monitor::Rules>,
    /// The run record, for baselines.
    pub store: &'a state::Store,
    /// Most output bytes kept per job.
    pub max_output: u64,
}

/// Runs `plan` to completion and publishes its events.
pub(crate) fn run_job(plan: &JobPlan, ctx: &JobContext<'_>) -> JobOutcome {
    let started = Instant::now();
    ctx.bus.emit(Event::JobStarted {
        job: plan.id.clone(),
    });
    let outcome = run_in_sandbox(plan, ctx, started);
    ctx.bus.emit(Event::JobFinished {
        job: plan.id.clone(),
        status: outcome.status,
        exit_code: outcome.exit_code,
        reason: outcome.reason.clone(),
        took: started.elapsed(),
    });
    outcome
}

fn run_in_sandbox(plan: &JobPlan, ctx: &JobContext<'_>, started: Instant) -> JobOutcome {
    let leases = match lease_secrets(plan, ctx) {
        Ok(leases) => leases,
        Err(reason) => return failed(None, reason, false),
    };
    let revoked = AtomicBool::new(false);
    let revoke = || revoke_leases(plan, ctx, &leases, &revoked);
    let outcome = run_with_secrets(plan, ctx, started, &leases, &revoke);
    // Whatever the outcome: a job's secrets live exactly as long as it.
    revoke();
    outcome
}

/// Revokes the job's leases, once: as it ends, or earlier when it is
/// contained.
fn revoke_leases(
    plan: &JobPlan,
    ctx: &JobContext<'_>,
    leases: &[(&spec::SecretRef, Lease)],
    done: &AtomicBool,
) {
    let Some(store) = ctx.secrets else {
        return;
    };
    if leases.is_empty() || done.swap(true, Ordering::SeqCst) {
        return;
    }
    let ids: Vec<&secrets::LeaseId> = leases.iter().map(|(_, l)| l.id()).collect();
    match store.revoke_all(&ids) {
        Ok(_) => {
            for (secret, lease) in leases {
                ctx.bus.emit(Event::SecretRevoked {
                    job: plan.id.clone(),
                    name: secret.name.clone(),
                    lease: lease.id().as_str().to_string(),
                });
            }
        }
        Err(e) => {
            // Let the end of the job (or the run's sweep) try again.
            done.store(false, Ordering::SeqCst);
            tracing::error!("cannot revoke the leases of job {}: {e}", plan.id);
        }
    }
}

/// Leases every secret the job asks for, with the job's timeout as TTL:
/// all or none, in one transaction.
fn lease_secrets<'a>(
    plan: &'a JobPlan,
    ctx: &JobContext<'_>,
) -> Result<Vec<(&'a spec::SecretRef, Lease)>, String> {
    if plan.secrets.is_empty() {
        return Ok(Vec::new());
    }
    let Some(store) = ctx.secrets else {
        let name = plan.secrets.first().map(|s| s.name.as_str()).unwrap_or("");
        return Err(format!("unknown secret {name:?}: no secret store"));
    };
    let names: Vec<&str> = plan.secrets.iter().map(|s| s.name.as_str()).collect();
    let leases = store
        .lease_all(&names, ctx.pipeline, &plan.id, ctx.run, plan.timeout)
        .map_err(|e| e.to_string())?;
    let leases: Vec<(&spec::SecretRef, Lease)> = plan.secrets.iter().zip(leases).collect();
    for (secret, lease) in &leases {
        ctx.bus.emit(Event::SecretLeased {
            job: plan.id.clone(),
            name: secret.name.clone(),
            version: lease.info().version,
            lease: lease.id().as_str().to_string(),
        });
    }
    Ok(leases)
}

fn run_with_secrets(
    plan: &JobPlan,
    ctx: &JobContext<'_>,
    started: Instant,
    leases: &[(&spec::SecretRef, Lease)],
    revoke: &(dyn Fn() + Sync),
) -> JobOutcome {
    let deadline = started + plan.timeout;
    let mut config = plan.sandbox.clone();
    config.secrets = leases
        .iter()
        .map(|(secret, lease)| SecretFile {
            name: secret.name.clone(),
            value: Zeroizing::new(lease.expose().to_vec()),
        })
        .collect();
    // Every byte the job writes passes the redactor before any subscriber
    // (terminal, log file, run record) sees it. A job without secrets has
    // nothing to mask.
    let redactor = if leases.is_empty() {
        None
    } else {
        let values: Vec<&[u8]> = leases.iter().map(|(_, lease)| lease.expose()).collect();
        match redact::Patterns::new(&values) {
            Ok(patterns) => Some(Redactor::new(Arc::new(patterns))),
            // Fail closed: a secret that cannot be masked is not handed out.
            Err(e) => return failed(None, format!("cannot mask the job's secrets: {e}"), false),
        }
    };
    // Environment variables only where the pipeline asked for them.
    let mut secret_env = Vec::new();
    for (secret, lease) in leases {
        if let Some(var) = &secret.env {
            match std::str::from_utf8(lease.expose()) {
                Ok(value) => secret_env.push((var.clone(), value.to_string())),
                Err(_) => {
                    return failed(
                        None,
                        format!(
                            "secret {:?} is not UTF-8 text, so it cannot be the environment variable {var}; read it from /run/secrets/{} instead",
                            secret.name, secret.name
                        ),
                        false,
                    )
                }
            }
        }
    }
    if ctx.cgroups {
        config.cgroup = Some(CgroupSpec {
            name: sandbox::cgroup::name_for(&plan.id, ctx.run),
            limits: plan.limits,
        });
    }
    // A spare sandbox leaves only the job-specific setup on this path; if
    // none can be had, build one from scratch (which also reports why).
    let created = match ctx.spares.take() {
        Some(spare) if spare.fits(&config) => spare.start(&config),
        // A spare made on a guess that turned out wrong (e.g. cgroups) is
        // killed as it drops.
        _ => Sandbox::create(&config),
    };
    let mut sandbox = match created {
        Ok(s) => s,
        Err(e) => {
            let refused = matches!(
                e,
                SandboxError::Clone(_) | SandboxError::IdMap { .. } | SandboxError::Cgroup(_)
            );
            return failed(None, format!("cannot create the sandbox: {e}"), refused);
        }
    };
    ctx.bus.emit(Event::SandboxReady {
        job: plan.id.clone(),
        layers: layer_names(&config),
        took: started.elapsed(),
    });
    if let Ok(killer) = sandbox.killer() {
        if let Ok(mut k) = ctx.killers.lock() {
            k.push((plan.id.clone(), killer));
        }
    }

    // What the job's output and its words in records (argv, host names)
    // are redacted with: its secrets, and the values it registers as it
    // runs, read from its mask channel by whichever thread redacts next.
    let masks = Masks::new(
        &plan.id,
        redactor.as_ref().map(|r| Arc::clone(r.patterns())),
    );
    if let Some(channel) = sandbox.take_mask_channel() {
        masks.listen(channel);
    }
    let (seen, reported) = std::sync::mpsc::channel::<Seen>();
    let proxy = match (sandbox.take_egress(), &plan.egress) {
        (Some(sockets), Some(allow)) => {
            let mut config = net::Config::new(allow.clone());
            config.resolver = ctx.resolver.clone();
            let listeners = net::Listeners {
                proxy: sockets.proxy,
                dns: Some(sockets.dns),
            };
            let tx = seen.clone();
            let sink: Arc<dyn Fn(net::Connection) + Send + Sync> = Arc::new(move |c| {
                let _ = tx.send(Seen::Connection(c));
            });
            net::serve(config, listeners, sink)
                .map(Some)
                .map_err(|e| format!("cannot start the egress proxy: {e}"))
        }
        _ => Ok(None),
    };
    // Calls that try to get past the proxy (they fail: no route).
    let tx = seen.clone();
    sandbox.on_network_attempt(Box::new(move |a| {
        let _ = tx.send(Seen::Attempt(a));
    }));
    // Every exec of the job, for the detection rules. Fail closed: a job
    // that should be monitored and cannot be does not run.
    let mut unwatched = None;
    let watched = match ctx.rules {
        Some(_) => {
            let tx = seen.clone();
            sandbox
                .watch_execs(Box::new(move |e| {
                    let _ = tx.send(Seen::Execs(e, Instant::now()));
                }))
                .map_err(|e| {
                    unwatched = Some(format!(
                        "cannot watch the job's execs: {e} (--no-monitor runs it unmonitored)"
                    ));
                })
                .ok()
        }
        None => None,
    };
    let source = match watched {
        Some(sandbox::ExecSource::Perf) => "perf",
        Some(sandbox::ExecSource::Connector) => "connector",
        Some(sandbox::ExecSource::Polling) => "polling",
        None => "off",
    };
    // The perf watch hands over the execs of each read of its rings (every
    // 5 ms) at once; the other sources, one by one as they happen, so the
    // monitor waits for more after the first rather than wake for each.
    let one_by_one = watched != Some(sandbox::ExecSource::Perf);
    let probe = JobProbe {
        handle: sandbox.killer().ok(),
        revoke,
    };
    let baseline = match ctx.rules {
        Some(_) => ctx
            .store
            .baseline(ctx.pipeline, &plan.id)
            .unwrap_or_else(|e| {
                tracing::warn!("job {}: no baseline: {e}", plan.id);
                state::Baseline::default()
            }),
        None => state::Baseline::default(),
    };
    let last_output = AtomicU64::new(0);
    let contained = Mutex::new(None);
    let files_tx = seen.clone();
    drop(seen);
    let (mut outcome, destroyed) = std::thread::scope(|scope| {
        // The job's monitor: each connection and attempt becomes an event
        // as it ends, each exec and each second's sample an observation
        // for the rules. The thread ends when every sender is gone: the
        // proxy's at its shutdown, the sandbox's when it is destroyed.
        let watcher = std::thread::Builder::new()
            .name(format!("monitor-{}", plan.id))
            .spawn_scoped(scope, || {
                // Batched work that need not race the job: never preempt it.
                sandbox::procwatch::yield_to_the_job();
                // Owned by this thread (a Receiver cannot be shared).
                let reported = reported;
                let mut monitor = ctx.rules.map(|rules| {
                    JobMonitor::new(Setup {
                        job: &plan.id,
                        rules,
                        bus: ctx.bus,
                        probe: &probe,
                        masks: &masks,
                        baseline,
                        limits: plan.limits,
                        last_output: &last_output,
                        started,
                        contained: &contained,
                    })
                });
                let mut direct = 0usize;
                // Proxied connections and DNS queries so far, and those
                // past the cap by kind: (count, denied).
                let mut proxied = 0usize;
                let mut unrecorded: std::collections::BTreeMap<String, (usize, usize)> =
                    std::collections::BTreeMap::new();
                let mut files = Vec::new();
                let mut execs_lost = 0;
                let mut next_sample = Instant::now() + watch::SAMPLE_EVERY;
                let mut queued = std::collections::VecDeque::new();
                let mut gather = false;
                loop {
                    if gather {
                        // Execs come in streams: let the next ones queue
                        // up, so that this thread wakes once per batch
                        // instead of once per exec (the first exec of a
                        // stream is handled at once).
                        gather = false;
                        std::thread::sleep(watch::EXEC_BATCH);
                        queued.extend(reported.try_iter());
                    }
                    // Also in a steady stream of messages, once a second.
                    if Instant::now() >= next_sample {
                        next_sample = Instant::now() + watch::SAMPLE_EVERY;
                        if let Some(m) = monitor.as_mut() {
                            m.sample(Instant::now());
                        }
                    }
                    let s = match queued.pop_front() {
                        Some(s) => s,
                        None => {
                            let wait = next_sample.saturating_duration_since(Instant::now());
                            match reported.recv_timeout(wait) {
                                Ok(s) => s,
                                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                            }
                        }
                    };
                    gather = one_by_one && matches!(s, Seen::Execs(..)) && queued.is_empty();
                    let (event, seen_at) = match s {
                        Seen::Connection(c) => {
                            let event = egress_event(&plan.id, c, &masks);
                            proxied += 1;
                            if proxied > MAX_EGRESS_EVENTS {
                                // Not recorded one by one, but counted,
                                // and the rules still see it.
                                if let Event::Egress { kind, allowed, .. } = &event {
                                    let n = unrecorded.entry(kind.clone()).or_default();
                                    n.0 += 1;
                                    n.1 += usize::from(!allowed);
                                }
                                if let Some(m) = monitor.as_mut() {
                                    m.egress(&event, Instant::now());
                                }
                                continue;
                            }
                            (event, Instant::now())
                        }
                        Seen::Attempt(a) => {
                            direct += 1;
                            if direct > MAX_ATTEMPT_EVENTS {
                                continue;
                            }
                            (
                                attempt_event(&plan.id, &a, plan.egress.is_some()),
                                Instant::now(),
                            )
                        }
                        Seen::Execs(execs, at) => {
                            // Timed from the exec itself (the watch's
                            // kernel timestamp) where it is known, so a
                            // containment's `took` covers the whole path.
                            let (wall, now) = (std::time::SystemTime::now(), Instant::now());
                            for e in execs {
                                let behind = wall.duration_since(e.at).unwrap_or_default();
                                let at = now.checked_sub(behind).unwrap_or(at);
                                if let Some(m) = monitor.as_mut() {
                                    m.exec(watch::Exec {
                                        pid: e.pid,
                                        ppid: e.ppid,
                                        uid: e.uid,
                                        path: e.path,
                                        parent: e.parent,
                                        argv: e.argv,
                                        argv_at_exec: e.argv_at_exec,
                                        seen: at,
                                    });
                                }
                            }
                            continue;
                        }
                        Seen::Files(mut found, lost, (events, sample)) => {
                            execs_lost = lost;
                            // The names are the job's words: a secret (or
                            // a value it registered) in one must not reach
                            // the record.
                            let patterns = masks.current();
                            for f in &mut found {
                                f.path = watch::redact_text(patterns.as_ref(), &f.path);
                            }
                            if let Some(m) = monitor.as_mut() {
                                // The job's last sample, taken by the job
                                // thread before the cgroup goes: a limit it
                                // hit in its last second is counted too.
                                m.usage(Instant::now(), events, sample);
                                for f in &found {
                                    m.file(f);
                                }
                            }
                            files = found;
                            continue;
                        }
                    };
                    ctx.bus.emit(event.clone());
                    if let Some(m) = monitor.as_mut() {
                        m.egress(&event, seen_at);
                    }
                }
                if direct > MAX_ATTEMPT_EVENTS {
                    ctx.bus
                        .emit(unrecorded_attempts(&plan.id, direct - MAX_ATTEMPT_EVENTS));
                }
                for (kind, (count, denied)) in unrecorded {
                    ctx.bus
                        .emit(unrecorded_egress(&plan.id, &kind, count, denied));
                }
                if let Some(m) = monitor {
                    m.finish(source, files, execs_lost);
                }
            });
        // Fail closed: without its proxy, a job that needs the network
        // does not run at all; nor does one that cannot be watched.
        let mut stream = output::Stream::new(redactor, ctx.max_output);
        let mut outcome = match (&proxy, &unwatched) {
            (Ok(_), None) => run_steps(
                &mut sandbox,
                plan,
                ctx,
                deadline,
                &secret_env,
                &mut stream,
                &Watched {
                    masks: &masks,
                    started,
                    last_output: &last_output,
                },
            ),
            (Err(why), _) | (_, Some(why)) => failed(None, why.clone(), false),
        };
        // What registering values gave after the last step's output.
        for e in masks.take().events.into_iter().chain(masks.unreported()) {
            ctx.bus.emit(e);
        }
        if stream.dropped() > 0 {
            ctx.bus.emit(Event::OutputDropped {
                job: plan.id.clone(),
                bytes: stream.dropped(),
            });
        }
        let contained_now = contained.lock().ok().and_then(|c| c.clone());
        if outcome.status == Status::Success
            && contained_now.is_none()
            && !plan.artifacts.is_empty()
        {
            if let Err(e) = collect_artifacts(&sandbox, plan, ctx.run_dir) {
                outcome = failed(None, format!("artifacts: {e}"), false);
            }
        }
        if ctx.rules.is_some() {
            let files = watch::workspace_files(
                &sandbox.root(),
                std::path::Path::new(&plan.sandbox.workdir),
            );
            // Read here, not on the monitor thread, which may run late:
            // the cgroup is gone once the sandbox is torn down.
            let last = (probe.events(), probe.sample());
            let _ = files_tx.send(Seen::Files(files, sandbox.execs_lost(), last));
        }
        drop(files_tx);
        if let Ok(Some(proxy)) = proxy {
            proxy.shutdown();
        }
        if let Ok(mut k) = ctx.killers.lock() {
            k.retain(|(id, _)| id != &plan.id);
        }
        let destroyed = sandbox.destroy();
        if let Ok(watcher) = watcher {
            let _ = watcher.join();
        }
        (outcome, destroyed)
    });
    // A contained job failed because a rule stopped it, whatever its last
    // step reported.
    if let Some(c) = contained.lock().ok().and_then(|c| c.clone()) {
        outcome = JobOutcome {
            status: Status::Contained,
            exit_code: None,
            reason: Some(format!("contained by rule {}: {}", c.rule, c.summary)),
            refused: false,
        };
    }

    match destroyed {
        Ok(report) if report.is_clean() => {}
        Ok(report) => {
            ctx.bus.emit(Event::TeardownFailed {
                job: plan.id.clone(),
                pids: report.leftover_pids.clone(),
                cgroups: report.leftover_cgroups.clone(),
            });
            outcome = failed(
                outcome.exit_code,
                format!(
                    "teardown: processes {:?} and cgroups {:?} of the job survived",
                    report.leftover_pids, report.leftover_cgroups
                ),
                false,
            );
        }
        Err(e) => outcome = failed(outcome.exit_code, format!("teardown: {e}"), false),
    }
    if ctx.cancel.load(Ordering::SeqCst) && outcome.status != Status::Success {
        outcome.status = Status::Cancelled;
        outcome.reason = Some("cancelled".into());
    }
    outcome
}

fn run_steps(
    sandbox: &mut Sandbox,
    plan: &JobPlan,
    ctx: &JobContext<'_>,
    deadline: Instant,
    secret_env: &[(String, String)],
    stream: &mut output::Stream,
    watched: &Watched<'_>,
) -> JobOutcome {
    let job = plan.id.as_str();
    let run_id = ctx.run.to_string();
    for (index, step) in plan.steps.iter().enumerate() {
        if ctx.cancel.load(Ordering::SeqCst) {
            return JobOutcome {
                status: Status::Cancelled,
                exit_code: None,
                reason: Some("cancelled".into()),
                refused: false,
            };
        }
        ctx.bus.emit(Event::StepStarted {
            job: job.into(),
            index,
            name: step.name.clone(),
        });
        let step_started = Instant::now();
        let step_deadline = match step.timeout {
            Some(t) => deadline.min(step_started + t),
            None => deadline,
        };
        let mut command = step.command.clone();
        command.env.push(("AIRLOCK_RUN".into(), run_id.clone()));
        command.env.extend(secret_env.iter().cloned());

        let events_before = sandbox.events().unwrap_or_default();
        let result = run_command(sandbox, &command, step_deadline, stream, job, ctx, watched);

        let (mut status, exit_code, mut reason) = match result {
            Ok(CommandOutcome::Exited(0)) => (Status::Success, Some(0), None),
            Ok(CommandOutcome::Exited(code)) => (
                Status::Failed,
                Some(code),
                Some(format!("step {:?} exited with status {code}", step.name)),
            ),
            Ok(CommandOutcome::Signaled(sig)) => (
                Status::Failed,
                Some(128 + sig),
                Some(format!("step {:?} was killed by signal {sig}", step.name)),
            ),
            Ok(CommandOutcome::TimedOut) => {
                let reason = match step.timeout {
                    Some(t) if step_deadline < deadline => {
                        format!("step {:?} timed out after {}", step.name, human(t))
                    }
                    _ => format!("job timed out after {}", human(plan.timeout)),
                };
                (Status::Timeout, None, Some(reason))
            }
            Ok(CommandOutcome::SpawnFailed(e)) => (
                Status::Failed,
                None,
                Some(format!("step {:?} could not start: {e}", step.name)),
            ),
            Err(reason) => (Status::Failed, None, Some(reason)),
        };
        // A limit the kernel enforced explains the failure better than the
        // exit status it caused.
        if status != Status::Success {
            let after = sandbox.events().unwrap_or_default();
            if let Some(why) = limit_reason(&plan.limits, events_before, after) {
                status = Status::Failed;
                reason = Some(why);
            }
        }
        ctx.bus.emit(Event::StepFinished {
            job: job.into(),
            index,
            name: step.name.clone(),
            status,
            exit_code,
            took: step_started.elapsed(),
        });
        if status != Status::Success {
            return JobOutcome {
                status,
                exit_code,
                reason,
                refused: false,
            };
        }
    }
    JobOutcome {
        status: Status::Success,
        exit_code: Some(0),
        reason: None,
        refused: false,
    }
}

/// The names of the isolation layers a sandbox made with `config` has.
fn layer_names(config: &SandboxConfig) -> Vec<String> {
    let l = config.layers;
    [
        ("seccomp", l.seccomp),
        ("landlock", l.landlock),
        ("capabilities", l.capabilities),
        ("rlimits", l.rlimits),
        ("proc_masking", l.proc_masking),
        ("cgroup", config.cgroup.is_some()),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| name.to_string())
    .collect()
}

/// Runs one step's command, its output flowing through two threads: this
/// one reads the sandbox; the step's output thread reads the job's masks,
/// redacts, cuts the redacted bytes into lines and hands them to the
/// subscribers (`output`). Returns once the output thread has delivered every
/// line, so nothing of the step follows its `StepFinished`. `Err` is the
/// reason the step failed without an outcome.
fn run_command(
    sandbox: &mut Sandbox,
    command: &CommandSpec,
    deadline: Instant,
    stream: &mut output::Stream,
    job: &str,
    ctx: &JobContext<'_>,
    watched: &Watched<'_>,
) -> Result<CommandOutcome, String> {
    let Watched {
        masks,
        started,
        last_output,
    } = *watched;
    let bus = ctx.bus;
    let (mut handoff, pieces) = output::handoff();
    std::thread::scope(|scope| {
        let printer = std::thread::Builder::new()
            .name(format!("out-{job}"))
            .spawn_scoped(scope, move || pieces.deliver(job, bus, stream, masks))
            .map_err(|e| format!("cannot start the step's output thread: {e}"))?;
        let result = sandbox.run(command, deadline, &mut |o| match o {
            Output::Data(d) => {
                let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                last_output.store(now, Ordering::Relaxed);
                handoff.data(d);
            }
            Output::Idle => handoff.idle(),
        });
        // Hanging up ends the output thread once it has redacted and
        // delivered it all.
        drop(handoff);
        if let Err(panic) = printer.join() {
            std::panic::resume_unwind(panic);
        }
        result.map_err(|e| format!("sandbox: {e}"))
    })
}

/// What the job's output path shares with its monitor: the redaction
/// patterns in force (secrets and runtime masks), and when the job last
/// wrote output.
#[derive(Clone, Copy)]
struct Watched<'a> {
    masks: &'a Masks,
    started: Instant,
    /// Milliseconds after `started`.
    last_output: &'a AtomicU64,
}

/// What a job's monitor thread hears about.
enum Seen {
    /// The proxy or DNS responder finished a connection or query.
    Connection(net::Connection),
    /// A call of the job named an address other than loopback.
    Attempt(sandbox::Attempt),
    /// Processes of the job called execve (when the sink heard of them).
    Execs(Vec<sandbox::ExecEvent>, Instant),
    /// The files in the job's workspace as it ends, how many exec events
    /// the kernel dropped, and the job's cgroup's last limit events and
    /// usage.
    Files(
        Vec<state::FileChange>,
        u64,
        (Option<Events>, Option<sandbox::cgroup::Sample>),
    ),
}

/// The monitor's view of a running sandbox.
struct JobProbe<'a> {
    handle: Option<Killer>,
    revoke: &'a (dyn Fn() + Sync),
}

impl Probe for JobProbe<'_> {
    fn sample(&self) -> Option<sandbox::cgroup::Sample> {
        self.handle.as_ref()?.sample()
    }

    fn events(&self) -> Option<Events> {
        self.handle.as_ref()?.events()
    }

    fn contain(&self) -> Result<Vec<state::Process>, String> {
        let frozen = match &self.handle {
            Some(h) => h.contain().map_err(|e| {
                // Without its record, still stop it: the init takes every
                // process of the job with it.
                h.kill();
                e.to_string()
            }),
            None => Err("no handle on the sandbox".to_string()),
        };
        // Its secrets die with it, before anything else is reported.
        (self.revoke)();
        let now = state::Timestamp::now();
        Ok(frozen?
            .into_iter()
            .map(|p| state::Process {
                at: now,
                pid: i64::from(p.pid),
                ppid: i64::from(p.ppid),
                uid: i64::from(p.uid),
                path: p.path,
                argv: watch::join_argv(&p.argv),
                // The snapshot reads /proc: what the process shows now.
                argv_at_exec: false,
            })
            .collect())
    }
}

/// Attempts to bypass the proxy recorded per job; a job in a loop of them
/// gets one more event with the count of the rest.
const MAX_ATTEMPT_EVENTS: usize = 256;

/// Proxied connections and DNS queries recorded per job, one event each
/// (in the run record, the audit log and the live output): a job that
/// floods its proxy or DNS responder must not flood them. The rest are
/// counted by kind, in one event per kind as the job ends; the rules
/// still see every one.
const MAX_EGRESS_EVENTS: usize = 2048;

/// The event that closes a flood of proxied connections or DNS queries
/// of `kind`: `count` not recorded, `denied` of them refused.
fn unrecorded_egress(job: &str, kind: &str, count: usize, denied: usize) -> Event {
    let what = if kind == "dns" {
        "DNS queries"
    } else {
        "proxied connections"
    };
    unrecorded(
        job,
        kind,
        denied == 0,
        format!(
            "{count} more {what} ({kind}) were not recorded, {denied} of them denied (at most {MAX_EGRESS_EVENTS} proxied connections and DNS queries per job)"
        ),
    )
}

/// The event for a call that tried to reach `a.addr` directly.
fn attempt_event(job: &str, a: &sandbox::Attempt, egress: bool) -> Event {
    let why = if egress {
        "bypassed the egress proxy; the job's network has no route but loopback"
    } else {
        "the job has no network (network: none): no route but loopback"
    };
    Event::Egress {
        job: job.into(),
        kind: "direct".into(),
        host: a.addr.ip().to_string(),
        port: a.addr.port(),
        addr: Some(a.addr.to_string()),
        allowed: false,
        detail: format!("{}() to {} {why}", a.syscall, a.addr),
        bytes_up: 0,
        bytes_down: 0,
        took: Duration::ZERO,
    }
}

/// The event that closes a flood of attempts.
fn unrecorded_attempts(job: &str, count: usize) -> Event {
    unrecorded(
        job,
        "direct",
        false,
        format!(
            "{count} more attempts to reach addresses but loopback were not recorded (at most {MAX_ATTEMPT_EVENTS} per job)"
        ),
    )
}

/// An egress entry that stands for events past a cap: host `*`, no
/// address, no bytes.
fn unrecorded(job: &str, kind: &str, allowed: bool, detail: String) -> Event {
    Event::Egress {
        job: job.into(),
        kind: kind.into(),
        host: "*".into(),
        port: 0,
        addr: None,
        allowed,
        detail,
        bytes_up: 0,
        bytes_down: 0,
        took: Duration::ZERO,
    }
}

/// The event for one connection of the job's egress proxy. The host (and
/// the reason, which may repeat it) are the job's words: a job must not be
/// able to leak a secret into the run record and the audit log by asking
/// for `SECRET.example.org`, so they pass the job's redactor first.
fn egress_event(job: &str, c: net::Connection, masks: &Masks) -> Event {
    let patterns = masks.current();
    let clean = |text: String| watch::redact_text(patterns.as_ref(), &text);
    let (allowed, detail) = match c.decision {
        net::Decision::Allowed { rule } => (true, rule),
        net::Decision::Denied { reason } => (false, clean(reason)),
    };
    Event::Egress {
        job: job.into(),
        kind: match c.kind {
            net::Kind::Http => "http",
            net::Kind::Connect => "connect",
            net::Kind::Dns => "dns",
        }
        .into(),
        host: clean(c.host),
        port: c.port,
        addr: c.addr.map(|a| a.to_string()),
        allowed,
        detail,
        bytes_up: c.bytes_up,
        bytes_down: c.bytes_down,
        took: c.duration,
    }
}

/// Copies the job's artifacts to `RUN_DIR/artifacts/JOB`, all or nothing:
/// they land in a hidden directory first and are renamed into place.
fn collect_artifacts(sandbox: &Sandbox, plan: &JobPlan, run_dir: &Path) -> Result<(), String> {
    let base = run_dir.join("artifacts");
    let partial = base.join(format!(".{}.partial", plan.id));
    let done = base.join(&plan.id);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let copied = sandbox::artifacts::copy_out(
        &sandbox.root(),
        &plan.sandbox.workdir,
        &plan.artifacts,
        &partial,
    );
    match copied {
        Ok(_) => std::fs::rename(&partial, &done).map_err(|e| format!("{}: {e}", done.display())),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e.to_string())
        }
    }
}

/// The limit a step ran into, from the cgroup's event counters.
fn limit_reason(limits: &Limits, before: Events, after: Events) -> Option<String> {
    if after.oom_kills > before.oom_kills {
        let limit = limits
            .memory
            .map(spec::format_size)
            .unwrap_or_else(|| "?".into());
        return Some(format!(
            "memory limit ({limit}) exceeded: the kernel killed a process of the job (OOM)"
        ));
    }
    if after.pids_max > before.pids_max {
        let limit = limits
            .pids
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into());
        return Some(format!(
            "pids limit ({limit}) reached: the kernel refused {} fork(s)",
            after.pids_max - before.pids_max
        ));
    }
    None
}

fn failed(exit_code: Option<i32>, reason: String, refused: bool) -> JobOutcome {
    JobOutcome {
        status: Status::Failed,
        exit_code,
        reason: Some(reason),
        refused,
    }
}

/// `90s` -> `1m30s`.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}
