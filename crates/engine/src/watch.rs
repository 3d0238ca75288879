//! Watching one job as it runs: its execs, network, cgroup samples and
//! limit events become observations (`monitor` crate), detection rules
//! turn them into alerts, and a rule whose action is `kill` contains the
//! job.
//!
//! One [`JobMonitor`] per job lives on the job's monitor thread (see
//! `job.rs`), which also turns the egress proxy's connections into events.
//! It never blocks the job: sampling is once a second, and an exec costs
//! the thread one rule evaluation (rules are indexed by kind).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use monitor::{Kind, Observation, Rules, Value};
use redact::Patterns;
use sandbox::cgroup::{Events, Sample};

use crate::event::{Bus, Event};
use crate::masks::Masks;

/// Alerts one rule may raise for one job; further matches are counted and
/// reported once, as the job ends. A job in a loop must not be able to
/// flood the run record, the audit log and the webhook.
pub(crate) const MAX_ALERTS_PER_RULE: u64 = 10;

/// Processes of a job recorded one by one; the rest are counted.
pub(crate) const MAX_PROCESSES: usize = 1000;

/// Distinct binaries, and distinct endpoints, one job adds to its
/// baseline at most: a job running a million differently named links to
/// `/bin/true` must not write a million rows into the run record and the
/// baseline (the rules still see every one; past the cap a binary stays
/// new for the runs after).
pub(crate) const MAX_LEARNED: usize = 1000;

/// Most bytes of a process's arguments a process record keeps (the rules
/// see them all): a job passing megabytes of arguments to a thousand
/// processes must not write gigabytes into the run record.
pub(crate) const MAX_RECORDED_ARGV: usize = 4096;

/// Successful runs a job needs before `new_binary` and `new_endpoint` can
/// be true: one run is not yet a baseline.
pub(crate) const BASELINE_RUNS: u32 = 2;

/// A sample at or above this share of the job's CPU quota counts as busy.
const BUSY_PCT: f64 = 90.0;

/// What the monitor can ask of a running job's sandbox, from its own
/// thread while the job thread runs steps.
pub(crate) trait Probe: Send + Sync {
    /// The job's cgroup counters now.
    fn sample(&self) -> Option<Sample>;
    /// The limits the kernel enforced so far.
    fn events(&self) -> Option<Events>;
    /// Freezes the job, records its processes, kills it.
    fn contain(&self) -> Result<Vec<state::Process>, String>;
}

/// One exec of the job, as the sandbox reported it.
pub(crate) struct Exec {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub path: String,
    pub parent: String,
    pub argv: Vec<Vec<u8>>,
    /// Whether `argv` was read at the exec (see `sandbox::ExecEvent`).
    pub argv_at_exec: bool,
    pub seen: Instant,
}

/// The containment of a job, once a `kill` rule acted.
#[derive(Debug, Clone)]
pub(crate) struct Containment {
    /// The rule that acted.
    pub rule: String,
    /// What it matched.
    pub summary: String,
}

/// Watches one job.
pub(crate) struct JobMonitor<'a> {
    job: &'a str,
    rules: &'a Rules,
    bus: &'a Bus<'a>,
    probe: &'a dyn Probe,
    /// The job's redaction patterns (its secrets and runtime masks).
    masks: &'a Masks,
    /// The job's baseline, when it is established.
    baseline: Option<state::Baseline>,
    /// CPU quota in cores (1 without a quota).
    quota_cores: f64,
    memory_limit: Option<u64>,
    pids_limit: Option<u64>,
    /// When the job last wrote output, in ms after `started`.
    last_output: &'a std::sync::atomic::AtomicU64,
    started: Instant,
    alerts: HashMap<String, u64>,
    last_sample: Option<(Instant, Sample)>,
    last_events: Events,
    busy_secs: f64,
    pub(crate) contained: &'a Mutex<Option<Containment>>,
    execs: u64,
    processes: Vec<state::Process>,
    binaries: BTreeSet<String>,
    endpoints: BTreeSet<String>,
}

/// What a job's monitor is made from.
pub(crate) struct Setup<'a> {
    pub job: &'a str,
    pub rules: &'a Rules,
    pub bus: &'a Bus<'a>,
    pub probe: &'a dyn Probe,
    pub masks: &'a Masks,
    pub baseline: state::Baseline,
    pub limits: sandbox::cgroup::Limits,
    pub last_output: &'a std::sync::atomic::AtomicU64,
    pub started: Instant,
    pub contained: &'a Mutex<Option<Containment>>,
}

impl<'a> JobMonitor<'a> {
    pub(crate) fn new(s: Setup<'a>) -> JobMonitor<'a> {
        let established = s.baseline.runs >= BASELINE_RUNS;
        JobMonitor {
            job: s.job,
            rules: s.rules,
            bus: s.bus,
            probe: s.probe,
            masks: s.masks,
            baseline: established.then_some(s.baseline),
            quota_cores: s.limits.cpus.filter(|c| *c > 0.0).unwrap_or(1.0),
            memory_limit: s.limits.memory,
            pids_limit: s.limits.pids,
            last_output: s.last_output,
            started: s.started,
            alerts: HashMap::new(),
            last_sample: None,
            last_events: s.probe.events().unwrap_or_default(),
            busy_secs: 0.0,
            contained: s.contained,
            execs: 0,
            processes: Vec::new(),
            binaries: BTreeSet::new(),
            endpoints: BTreeSet::new(),
        }
    }

    /// A process of the job executed `e.path`.
    pub(crate) fn exec(&mut self, e: Exec) {
        self.execs += 1;
        // Read now, after the exec: a value the job registered before it
        // is masked in its arguments.
        let patterns = self.masks.current();
        let redacted = |text: &str| redact_text(patterns.as_ref(), text);
        let argv = redacted(&join_argv(&e.argv));
        let path = redacted(&e.path);
        let parent = file_name(&redacted(&e.parent));
        let new_binary = self
            .baseline
            .as_ref()
            .is_some_and(|b| !b.binaries.contains(&path));
        if self.binaries.len() < MAX_LEARNED {
            self.binaries.insert(path.clone());
        }
        if self.processes.len() < MAX_PROCESSES {
            self.processes.push(state::Process {
                at: state::Timestamp::now(),
                pid: i64::from(e.pid),
                ppid: i64::from(e.ppid),
                uid: i64::from(e.uid),
                path: path.clone(),
                argv: monitor::clip(&argv, MAX_RECORDED_ARGV),
                argv_at_exec: e.argv_at_exec,
            });
        }
        let obs = Observation::new(Kind::Exec)
            .with("pid", i64::from(e.pid))
            .with("ppid", i64::from(e.ppid))
            .with("uid", u64::from(e.uid))
            .with("binary", file_name(&path))
            .with("parent", parent)
            .with("path", path)
            .with("argv", argv)
            .with("new_binary", new_binary);
        self.observe(&obs, e.seen);
    }

    /// The job's network did something (an `Event::Egress`, already
    /// redacted).
    pub(crate) fn egress(&mut self, event: &Event, seen: Instant) {
        let Event::Egress {
            kind,
            host,
            port,
            addr,
            allowed,
            detail,
            ..
        } = event
        else {
            return;
        };
        let endpoint = format!("{host}:{port}");
        let counts = *allowed && (kind == "http" || kind == "connect");
        let new_endpoint = counts
            && self
                .baseline
                .as_ref()
                .is_some_and(|b| !b.endpoints.contains(&endpoint));
        if counts && self.endpoints.len() < MAX_LEARNED {
            self.endpoints.insert(endpoint.clone());
        }
        let obs = Observation::new(Kind::Egress)
            .with("kind", kind.as_str())
            .with("host", host.as_str())
            .with("port", u64::from(*port))
            .with("addr", addr.clone().unwrap_or_default())
            .with("endpoint", endpoint)
            .with("allowed", *allowed)
            .with("detail", detail.as_str())
            .with("new_endpoint", new_endpoint);
        self.observe(&obs, seen);
    }

    /// Samples the job's cgroup (call about once a second) and reports
    /// limits the kernel enforced since the last call.
    pub(crate) fn sample(&mut self, now: Instant) {
        let (events, sample) = (self.probe.events(), self.probe.sample());
        self.usage(now, events, sample);
    }

    /// Like [`sample`](JobMonitor::sample), from a sample the caller took
    /// (the job's last, read before its cgroup goes away).
    pub(crate) fn usage(&mut self, now: Instant, events: Option<Events>, sample: Option<Sample>) {
        if let Some(events) = events {
            let before = self.last_events;
            self.last_events = events;
            for (limit, count) in [
                ("memory", events.oom_kills.saturating_sub(before.oom_kills)),
                ("pids", events.pids_max.saturating_sub(before.pids_max)),
            ] {
                if count > 0 {
                    let obs = Observation::new(Kind::Limit)
                        .with("limit", limit)
                        .with("count", count);
                    self.observe(&obs, now);
                }
            }
        }
        let Some(sample) = sample else {
            return;
        };
        let Some((then, last)) = self.last_sample.replace((now, sample)) else {
            return;
        };
        let interval = now.duration_since(then).as_secs_f64();
        if interval <= 0.0 {
            return;
        }
        #[allow(clippy::cast_precision_loss)] // nanoseconds of CPU: f64 is plenty
        let used = sample.cpu_usage_ns.saturating_sub(last.cpu_usage_ns) as f64 / 1e9;
        let cpu_pct = 100.0 * used / (interval * self.quota_cores);
        if cpu_pct >= BUSY_PCT {
            self.busy_secs += interval;
        } else {
            self.busy_secs = 0.0;
        }
        let since_output = now
            .saturating_duration_since(self.started)
            .as_millis()
            .saturating_sub(u128::from(
                self.last_output.load(std::sync::atomic::Ordering::Relaxed),
            ));
        #[allow(clippy::cast_precision_loss)]
        let quiet_secs = since_output as f64 / 1000.0;
        #[allow(clippy::cast_precision_loss)]
        let pct = |n: u64, limit: Option<u64>| {
            limit
                .filter(|l| *l > 0)
                .map_or(0.0, |l| 100.0 * n as f64 / l as f64)
        };
        let obs = Observation::new(Kind::Sample)
            .with("cpu_pct", whole(cpu_pct))
            .with("memory_bytes", sample.memory_bytes)
            .with(
                "memory_pct",
                whole(pct(sample.memory_bytes, self.memory_limit)),
            )
            .with("pids", sample.pids)
            .with("pids_pct", whole(pct(sample.pids, self.pids_limit)))
            .with("io_read_bytes", sample.io_read_bytes)
            .with("io_write_bytes", sample.io_write_bytes)
            .with("busy_secs", whole(self.busy_secs.floor()))
            .with("quiet_secs", whole(quiet_secs.floor()));
        self.observe(&obs, now);
    }

    /// A file the job left in its workspace.
    pub(crate) fn file(&mut self, f: &state::FileChange) {
        let obs = Observation::new(Kind::File)
            .with("path", f.path.as_str())
            .with("change", f.change.as_str())
            .with("size", f.size)
            .with("executable", f.executable);
        self.observe(&obs, Instant::now());
    }

    /// Evaluates the rules on `obs`, raising alerts and containing the
    /// job for a `kill` rule. `seen` is when the observation was made.
    fn observe(&mut self, obs: &Observation, seen: Instant) {
        for rule in self.rules.evaluate(obs) {
            let fired = self.alerts.entry(rule.id().to_string()).or_insert(0);
            *fired += 1;
            let kill = rule.action() == monitor::Action::Kill;
            if *fired <= MAX_ALERTS_PER_RULE {
                self.bus.emit(Event::Alert {
                    job: self.job.into(),
                    rule: rule.id().into(),
                    severity: rule.severity().to_string(),
                    description: rule.description().into(),
                    action: rule.action().to_string(),
                    summary: obs.summary(),
                    observation: serde_json::to_value(obs.fields()).unwrap_or_default(),
                });
            }
            if kill {
                self.contain(rule.id(), obs, seen);
            }
        }
    }

    /// Contains the job (once): freeze, record, kill.
    fn contain(&mut self, rule: &str, obs: &Observation, seen: Instant) {
        {
            let Ok(mut slot) = self.contained.lock() else {
                return;
            };
            if slot.is_some() {
                return;
            }
            *slot = Some(Containment {
                rule: rule.into(),
                summary: obs.summary(),
            });
        }
        let processes = match self.probe.contain() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("cannot contain job {}: {e}", self.job);
                Vec::new()
            }
        };
        let patterns = self.masks.current();
        let processes = processes
            .into_iter()
            .map(|mut p| {
                // Redacted whole, then cut: a cut must not split a secret.
                p.argv = monitor::clip(&redact_text(patterns.as_ref(), &p.argv), MAX_RECORDED_ARGV);
                p.path = redact_text(patterns.as_ref(), &p.path);
                p
            })
            .collect();
        self.bus.emit(Event::Contained {
            job: self.job.into(),
            rule: rule.into(),
            summary: obs.summary(),
            processes,
            took: seen.elapsed(),
        });
    }

    /// Reports what the job did, as it ends.
    pub(crate) fn finish(self, source: &str, files: Vec<state::FileChange>, lost: u64) {
        for (rule, fired) in &self.alerts {
            if *fired > MAX_ALERTS_PER_RULE {
                self.bus.emit(Event::AlertsSuppressed {
                    job: self.job.into(),
                    rule: rule.clone(),
                    count: fired - MAX_ALERTS_PER_RULE,
                });
            }
        }
        self.bus.emit(Event::JobActivity {
            job: self.job.into(),
            execs: self.execs,
            execs_lost: lost,
            source: source.into(),
            processes: self.processes,
            files,
            endpoints: self.endpoints,
            binaries: self.binaries,
        });
    }
}

/// `text` with `patterns` masked (unchanged without patterns).
pub(crate) fn redact_text(patterns: Option<&Arc<Patterns>>, text: &str) -> String {
    match patterns {
        None => text.to_string(),
        Some(patterns) => {
            let mut r = redact::Redactor::new(Arc::clone(patterns));
            let mut out = Vec::with_capacity(text.len());
            r.push(text.as_bytes(), &mut out);
            r.finish(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        }
    }
}

/// Arguments joined by spaces, as text.
pub(crate) fn join_argv(argv: &[Vec<u8>]) -> String {
    let mut out = Vec::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(arg);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// A percentage or a count of seconds, to the whole number: rules compare
/// with thresholds, and the audit log wants integers.
fn whole(x: f64) -> Value {
    Value::Number(x.round())
}

/// Every regular file under the job's workspace (at most `MAX_FILES`,
/// found within `MAX_VISITS` entries), with paths as the job sees them.
/// The workspace is a fresh tmpfs, so every file in it was created by the
/// job.
pub(crate) fn workspace_files(
    root: &std::path::Path,
    workdir: &std::path::Path,
) -> Vec<state::FileChange> {
    use std::os::unix::fs::PermissionsExt;
    const MAX_FILES: usize = 1000;
    const MAX_VISITS: usize = 20_000;
    let inside = workdir.strip_prefix("/").unwrap_or(workdir);
    let mut files = Vec::new();
    let mut stack = vec![root.join(inside)];
    let mut visits = 0usize;
    'walk: while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            visits += 1;
            if visits > MAX_VISITS || files.len() >= MAX_FILES {
                break 'walk;
            }
            // symlink_metadata: never follow a link the job planted.
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                let path = entry.path();
                let shown = path
                    .strip_prefix(root)
                    .map(|p| std::path::Path::new("/").join(p))
                    .unwrap_or_else(|_| path.clone());
                files.push(state::FileChange {
                    path: shown.to_string_lossy().into_owned(),
                    change: "created".into(),
                    size: meta.len(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// How long the monitor thread lets execs queue up after one, before it
/// takes them all, where the watch reports them one by one (the connector
/// and polling sources; the perf source reports them in batches already):
/// a job running thousands of short programs wakes it once per batch. It
/// delays an alert by at most this much, never the first exec of a stream.
pub(crate) const EXEC_BATCH: Duration = Duration::from_millis(4);

/// How often the monitor samples a job's cgroup.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::event::Subscriber;

    /// A stand-in for a sandbox (no kernel here): samples are scripted,
    /// containment is counted.
    #[derive(Default)]
    struct Scripted {
        cpu_ns: AtomicU64,
        contained: AtomicU64,
    }

    impl Probe for Scripted {
        fn sample(&self) -> Option<Sample> {
            Some(Sample {
                cpu_usage_ns: self.cpu_ns.load(std::sync::atomic::Ordering::SeqCst),
                memory_bytes: 1 << 20,
                pids: 3,
                io_read_bytes: 0,
                io_write_bytes: 0,
            })
        }
        fn events(&self) -> Option<Events> {
            Some(Events::default())
        }
        fn contain(&self) -> Result<Vec<state::Process>, String> {
            self.contained
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Vec::new())
        }
    }

    #[derive(Default)]
    struct Seen(Mutex<Vec<Event>>);

    impl Subscriber for Seen {
        fn event(&self, event: &Event) {
            self.0.lock().expect("lock").push(event.clone());
        }
    }

    impl Seen {
        fn alerts(&self, rule: &str) -> usize {
            let events = self.0.lock().expect("lock");
            events
                .iter()
                .filter(|e| matches!(e, Event::Alert { rule: r, .. } if r == rule))
                .count()
        }
    }

    fn exec(argv: &str) -> Exec {
        Exec {
            pid: 7,
            ppid: 1,
            uid: 0,
            path: "/usr/bin/nc".into(),
            parent: "/usr/bin/dash".into(),
            argv: argv.split(' ').map(|a| a.as_bytes().to_vec()).collect(),
            argv_at_exec: true,
            seen: Instant::now(),
        }
    }

    /// Runs `f` on a monitor of job `j` with the shipped rules.
    fn watching(probe: &Scripted, seen: &Seen, f: impl FnOnce(&mut JobMonitor<'_>, Instant)) {
        let rules = Rules::builtin();
        let bus = Bus::new(vec![seen]);
        let masks = Masks::new("j", None);
        let last_output = AtomicU64::new(0);
        let contained = Mutex::new(None);
        let started = Instant::now();
        let mut m = JobMonitor::new(Setup {
            job: "j",
            rules: &rules,
            bus: &bus,
            probe,
            masks: &masks,
            baseline: state::Baseline::default(),
            limits: sandbox::cgroup::Limits::default(),
            last_output: &last_output,
            started,
            contained: &contained,
        });
        f(&mut m, started);
        m.finish("connector", Vec::new(), 0);
    }

    #[test]
    fn a_rule_raises_at_most_ten_alerts_per_job_and_counts_the_rest() {
        let (probe, seen) = (Scripted::default(), Seen::default());
        watching(&probe, &seen, |m, _| {
            for _ in 0..25 {
                m.exec(exec("nc -l -p 4444"));
            }
        });
        assert_eq!(seen.alerts("netcat-listener"), 10);
        let suppressed = seen.0.lock().expect("lock").iter().any(|e| {
            matches!(e, Event::AlertsSuppressed { rule, count: 15, .. } if rule == "netcat-listener")
        });
        assert!(suppressed, "the 15 others are counted");
        assert_eq!(probe.contained.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn a_job_learns_at_most_the_cap_of_binaries_and_records_short_arguments() {
        let (probe, seen) = (Scripted::default(), Seen::default());
        watching(&probe, &seen, |m, _| {
            for i in 0..MAX_LEARNED + 50 {
                let mut e = exec(&format!("t{i} {}", "a".repeat(10_000)));
                e.path = format!("/workspace/t{i}");
                m.exec(e);
            }
        });
        let events = seen.0.lock().expect("lock");
        let activity = events.iter().find_map(|e| match e {
            Event::JobActivity {
                binaries,
                processes,
                ..
            } => Some((binaries.len(), processes.clone())),
            _ => None,
        });
        let (binaries, processes) = activity.expect("the job's activity");
        assert_eq!(binaries, MAX_LEARNED);
        assert!(processes
            .iter()
            .all(|p| p.argv.len() < MAX_RECORDED_ARGV + 64 && p.argv.ends_with("bytes in all)")));
    }

    #[test]
    fn a_job_at_its_quota_with_no_output_for_30_seconds_raises_cpu_busy() {
        let (probe, seen) = (Scripted::default(), Seen::default());
        watching(&probe, &seen, |m, started| {
            // One core's worth of CPU per second (no quota: one core), for
            // 40 seconds of samples, and no output at all.
            for second in 0..40u64 {
                probe
                    .cpu_ns
                    .store(second * 1_000_000_000, std::sync::atomic::Ordering::SeqCst);
                m.sample(started + Duration::from_secs(second));
            }
        });
        assert!(seen.alerts("cpu-busy-no-output") >= 1);
    }
}
