//! Monitoring's edges in the binary: which detection rules a run loads,
//! and delivering its alerts to the operator's webhook and command hook.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use engine::{Event, Subscriber};
use monitor::notify::{Alert, CommandHook, DeliveryReport, Notifier, Target, Webhook, WebhookKey};
use monitor::Rules;

use crate::exit::Exit;

/// How long the end of a run waits for alerts still being delivered.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(15);

/// The shipped rules plus the operator's: `dir`, else `HOME/rules` if it
/// exists. A rule file with an error is bad input (exit 2), naming the
/// file, line and column.
pub fn load_rules(home: &Path, dir: Option<&Path>) -> Result<Rules> {
    let default = home.join("rules");
    let dir = match dir {
        Some(d) => Some(d.to_path_buf()),
        None => default.is_dir().then_some(default),
    };
    let loaded = match &dir {
        Some(d) => Rules::with_dir(d),
        None => Ok(Rules::builtin()),
    };
    loaded.map_err(|e| Exit::bad_input(format!("detection rules: {e}")).into())
}

/// The notifier for the run's alert targets, if there are any.
pub fn notifier(
    webhook: Option<&(String, PathBuf)>,
    command: Option<&PathBuf>,
) -> Result<Option<Notifier>> {
    let mut targets = Vec::new();
    if let Some((url, key)) = webhook {
        let key = WebhookKey::from_file(key).map_err(|e| Exit::bad_input(e.to_string()))?;
        let hook = Webhook::new(url, key).map_err(|e| Exit::bad_input(e.to_string()))?;
        targets.push(Target::Webhook(hook));
    }
    if let Some(program) = command {
        targets.push(Target::Command(CommandHook::new(
            program.clone(),
            Vec::<String>::new(),
        )));
    }
    if targets.is_empty() {
        return Ok(None);
    }
    Ok(Some(Notifier::start(targets).map_err(|e| {
        anyhow::anyhow!("cannot start alert delivery: {e}")
    })?))
}

/// A subscriber that hands every alert of the run to the notifier.
pub struct Forwarder {
    notifier: Mutex<Option<Notifier>>,
    /// Run id and pipeline, once the run has started.
    run: Mutex<Option<(i64, String)>>,
}

impl Forwarder {
    /// Forwards to `notifier` (nothing, without one).
    pub fn new(notifier: Option<Notifier>) -> Forwarder {
        Forwarder {
            notifier: Mutex::new(notifier),
            run: Mutex::new(None),
        }
    }

    /// Waits (a bounded time) for alerts still being delivered, and
    /// records every failed delivery in the audit log and on stderr.
    pub fn finish(&self, trail: &engine::audit::AuditTrail) {
        let Some(notifier) = self.notifier.lock().ok().and_then(|mut n| n.take()) else {
            return;
        };
        let DeliveryReport {
            delivered,
            failed,
            dropped,
            unfinished,
        } = notifier.finish(DELIVERY_DEADLINE);
        for f in &failed {
            eprintln!(
                "airlock: alert {} of job {} was not delivered to {}: {}",
                f.rule, f.job, f.target, f.error
            );
            trail.record(
                "alert_delivery_failed",
                &serde_json::json!({
                    "job": f.job, "rule": f.rule, "target": f.target, "error": f.error.to_string(),
                }),
            );
        }
        if dropped > 0 || unfinished > 0 {
            eprintln!(
                "airlock: {dropped} alert(s) were dropped (queue full) and {unfinished} not delivered in {}s",
                DELIVERY_DEADLINE.as_secs()
            );
            trail.record(
                "alert_delivery_incomplete",
                &serde_json::json!({ "dropped": dropped, "unfinished": unfinished }),
            );
        }
        tracing::debug!("{delivered} alert deliveries succeeded");
    }
}

impl Subscriber for Forwarder {
    fn event(&self, event: &Event) {
        match event {
            Event::RunStarted { run, pipeline, .. } => {
                if let Ok(mut slot) = self.run.lock() {
                    *slot = Some((*run, pipeline.clone()));
                }
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
                let (run, pipeline) = self
                    .run
                    .lock()
                    .ok()
                    .and_then(|r| r.clone())
                    .unwrap_or_default();
                let alert = Alert {
                    version: Alert::VERSION,
                    run,
                    pipeline,
                    job: job.clone(),
                    rule: rule.clone(),
                    severity: severity.clone(),
                    description: description.clone(),
                    action: action.clone(),
                    summary: summary.clone(),
                    observation: observation.clone(),
                    at: state::Timestamp::now().to_string(),
                };
                if let Ok(n) = self.notifier.lock() {
                    if let Some(n) = n.as_ref() {
                        n.send(alert);
                    }
                }
            }
            _ => {}
        }
    }
}
