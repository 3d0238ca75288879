//! The audit trail: every event of a run, and every change the secret store
//! reports, made durable in the tamper-evident audit log (`audit` crate).
//!
//! [`AuditTrail`] is a [`Subscriber`]. Events are queued, and one writer
//! thread appends whatever is queued in one batch (the log's group commit),
//! so a job never waits for the disk.
//! [`AuditTrail::finish`] drains the queue and signs a checkpoint. With a
//! log opened with `sync_batches: false` (as the binary does), batches are
//! written at once and made durable by that checkpoint: the run's record is
//! durable and signed when the run ends, and a crash of the runner loses
//! nothing written (a power loss mid-run can lose the batches since the
//! last checkpoint, which the next open detects). If the log cannot be
//! written, the trail raises its failure flag (the runner's cancel flag):
//! a run that cannot be audited does not go on (fail closed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use audit::{AuditError, AuditLog, SignedCheckpoint};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::{Event, Subscriber};

/// Queues events for the audit log and writes them from its own thread.
pub struct AuditTrail {
    log: AuditLog,
    queue: Mutex<Option<Sender<Value>>>,
    writer: Mutex<Option<JoinHandle<Result<(), AuditError>>>>,
    /// The run the events belong to, once `RunStarted` names it.
    run: Mutex<Option<Value>>,
    failed: Arc<AtomicBool>,
}

impl AuditTrail {
    /// Starts the writer thread. `on_failure` is set if an append fails.
    pub fn start(log: AuditLog, on_failure: Arc<AtomicBool>) -> AuditTrail {
        let (tx, rx) = channel::<Value>();
        let writer_log = log.clone();
        let flag = Arc::clone(&on_failure);
        let writer = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    if let Err(e) = writer_log.append(batch) {
                        flag.store(true, Ordering::SeqCst);
                        tracing::error!("cannot write the audit log: {e}");
                        return Err(e);
                    }
                }
                Ok(())
            })
            .ok();
        if writer.is_none() {
            on_failure.store(true, Ordering::SeqCst);
        }
        AuditTrail {
            log,
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(writer),
            run: Mutex::new(None),
            failed: on_failure,
        }
    }

    /// Queues one entry: `kind` and the fields of `what` (an object), plus
    /// the run, once known.
    pub fn record(&self, kind: &str, what: &impl Serialize) {
        let mut entry = match serde_json::to_value(what) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                let mut map = Map::new();
                map.insert("value".into(), other);
                map
            }
            Err(e) => {
                tracing::error!("cannot encode an audit entry of kind {kind}: {e}");
                self.failed.store(true, Ordering::SeqCst);
                return;
            }
        };
        // `index`, `time` and `prev` belong to the log; the one event field
        // among them, a step's index, is logged as `step`.
        if let Some(step) = entry.remove("index") {
            entry.insert("step".into(), step);
        }
        entry.remove("time");
        entry.remove("prev");
        entry.insert("kind".into(), Value::String(kind.into()));
        if !entry.contains_key("run") {
            if let Some(run) = self.run.lock().ok().and_then(|r| r.clone()) {
                entry.insert("run".into(), run);
            }
        }
        let sent = self
            .queue
            .lock()
            .ok()
            .and_then(|q| q.as_ref().map(|tx| tx.send(Value::Object(entry)).is_ok()));
        if sent != Some(true) {
            self.failed.store(true, Ordering::SeqCst);
        }
    }

    /// Writes everything queued and signs a checkpoint over the log.
    pub fn finish(&self) -> Result<SignedCheckpoint, AuditError> {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            match writer.join() {
                Ok(result) => result?,
                Err(_) => return Err(AuditError::Poisoned),
            }
        }
        self.log.checkpoint()
    }
}

impl Subscriber for AuditTrail {
    fn event(&self, event: &Event) {
        if let Event::RunStarted { run, .. } = event {
            if let (Ok(mut slot), Ok(id)) = (self.run.lock(), serde_json::to_value(run)) {
                *slot = Some(id);
            }
        }
        let mut value = match serde_json::to_value(event) {
            Ok(Value::Object(map)) => map,
            _ => {
                self.failed.store(true, Ordering::SeqCst);
                return;
            }
        };
        // A job's activity holds up to thousands of processes and files;
        // the run record keeps them. The audit log keeps what a reviewer
        // needs to spot a change: counts, binaries and endpoints.
        if let Event::JobActivity {
            processes, files, ..
        } = event
        {
            value.remove("processes");
            value.remove("files");
            value.insert("processes".into(), Value::from(processes.len()));
            value.insert("files".into(), Value::from(files.len()));
        }
        let kind = match value.remove("event") {
            Some(Value::String(kind)) => kind,
            _ => "event".to_string(),
        };
        self.record(&kind, &value);
    }
}

impl Drop for AuditTrail {
    fn drop(&mut self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        if let Some(writer) = self.writer.get_mut().ok().and_then(Option::take) {
            let _ = writer.join();
        }
    }
}
