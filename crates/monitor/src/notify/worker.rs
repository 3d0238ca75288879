//! The delivery worker: a bounded queue and one thread that delivers.

use std::fmt;
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use super::alert::Alert;
use super::{Cancel, NotifyError, Target};

/// An alert that a target did not get.
#[derive(Debug)]
pub struct Failure {
    /// The target, as [`Target::name`] names it.
    pub target: String,
    /// The alert's run.
    pub run: i64,
    /// The alert's job.
    pub job: String,
    /// The alert's rule.
    pub rule: String,
    /// Why.
    pub error: NotifyError,
}

/// What became of one alert at one target, passed to the callback of
/// [`NotifierBuilder::on_outcome`] as it happens.
#[derive(Debug)]
pub enum Outcome {
    /// The target got the alert.
    Delivered {
        /// The target, as [`Target::name`] names it.
        target: String,
        /// The alert's run.
        run: i64,
        /// The alert's job.
        job: String,
        /// The alert's rule.
        rule: String,
        /// The attempts it took.
        attempts: u32,
    },
    /// The target did not get it.
    Failed(Failure),
}

/// What [`Notifier::finish`] reports.
#[derive(Debug, Default)]
pub struct DeliveryReport {
    /// Deliveries that succeeded, one per alert per target.
    pub delivered: usize,
    /// Deliveries that failed, in the order they failed.
    pub failed: Vec<Failure>,
    /// Alerts not queued because the queue was full.
    pub dropped: u64,
    /// Alerts queued but not delivered to every target before the deadline.
    pub unfinished: u64,
}

/// A callback told of every outcome, on the delivery thread.
type OnOutcome = Box<dyn FnMut(&Outcome) + Send>;

/// Sets up a [`Notifier`].
pub struct NotifierBuilder {
    targets: Vec<Target>,
    queue: usize,
    on_outcome: Option<OnOutcome>,
}

impl NotifierBuilder {
    /// Queues at most `alerts` alerts waiting for delivery (at least one);
    /// more are dropped and counted. The default is
    /// [`Notifier::DEFAULT_QUEUE`].
    pub fn queue(mut self, alerts: usize) -> NotifierBuilder {
        self.queue = alerts.max(1);
        self
    }

    /// Calls `f` with every outcome as it happens, on the delivery thread
    /// (so `f` should be quick: the next delivery waits for it).
    pub fn on_outcome(mut self, f: impl FnMut(&Outcome) + Send + 'static) -> NotifierBuilder {
        self.on_outcome = Some(Box::new(f));
        self
    }

    /// Starts the delivery thread.
    pub fn start(self) -> Result<Notifier, NotifyError> {
        let (tx, rx) = mpsc::sync_channel(self.queue);
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            targets: self.targets,
            on_outcome: self.on_outcome,
            shared: Arc::clone(&shared),
        };
        thread::Builder::new()
            .name("airlock-notify".into())
            .spawn(move || worker.run(&rx))
            .map_err(NotifyError::Thread)?;
        Ok(Notifier { tx, shared })
    }
}

impl fmt::Debug for NotifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifierBuilder")
            .field("targets", &self.targets)
            .field("queue", &self.queue)
            .field("on_outcome", &self.on_outcome.is_some())
            .finish()
    }
}

/// Delivers alerts in the background; [`Notifier::send`] never blocks.
///
/// Dropping it without [`Notifier::finish`] leaves the thread to deliver
/// what is queued, unwatched.
#[derive(Debug)]
pub struct Notifier {
    tx: SyncSender<Alert>,
    shared: Arc<Shared>,
}

impl Notifier {
    /// How many alerts wait for delivery at most, by default.
    pub const DEFAULT_QUEUE: usize = 1024;

    /// Starts delivering to `targets`, with the defaults.
    pub fn start(targets: Vec<Target>) -> Result<Notifier, NotifyError> {
        Notifier::builder(targets).start()
    }

    /// A notifier for `targets`, to be set up and started.
    pub fn builder(targets: Vec<Target>) -> NotifierBuilder {
        NotifierBuilder {
            targets,
            queue: Notifier::DEFAULT_QUEUE,
            on_outcome: None,
        }
    }

    /// Queues `alert` for delivery without waiting; when the queue is full
    /// it is dropped and counted. Whether it was queued.
    pub fn send(&self, alert: Alert) -> bool {
        // Counted before it is queued, so the worker never finishes an
        // alert that is not counted yet.
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        if self.tx.try_send(alert).is_ok() {
            return true;
        }
        self.shared.queued.fetch_sub(1, Ordering::SeqCst);
        self.shared.dropped.fetch_add(1, Ordering::SeqCst);
        false
    }

    /// Stops taking alerts and waits up to `deadline` for the queued ones
    /// to be delivered. At the deadline, deliveries in progress stop at
    /// their next wait (a hook is killed) and the rest are abandoned;
    /// [`DeliveryReport::unfinished`] counts them.
    pub fn finish(self, deadline: Duration) -> DeliveryReport {
        let Notifier { tx, shared } = self;
        drop(tx);
        let state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut state, _) = shared
            .idle
            .wait_timeout_while(state, deadline, |s| !s.stopped)
            .unwrap_or_else(PoisonError::into_inner);
        if !state.stopped {
            shared.cancel.cancel();
        }
        let queued = shared.queued.load(Ordering::SeqCst);
        DeliveryReport {
            delivered: state.delivered,
            failed: mem::take(&mut state.failed),
            dropped: shared.dropped.load(Ordering::SeqCst),
            unfinished: queued.saturating_sub(state.finished),
        }
    }
}

/// What the notifier and its thread share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the thread stops.
    idle: Condvar,
    cancel: Cancel,
    queued: AtomicU64,
    dropped: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("queued", &self.queued)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    delivered: usize,
    failed: Vec<Failure>,
    /// Alerts delivered to every target, or failed at some.
    finished: u64,
    /// The thread has stopped.
    stopped: bool,
}

struct Worker {
    targets: Vec<Target>,
    on_outcome: Option<OnOutcome>,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(mut self, rx: &Receiver<Alert>) {
        // Tells `finish` the thread stopped, even if a callback panicked.
        let _stopped = Stopped(Arc::clone(&self.shared));
        while let Ok(alert) = rx.recv() {
            if !self.deliver(&alert) {
                break;
            }
        }
    }

    /// Delivers `alert` to every target; false once cancelled.
    fn deliver(&mut self, alert: &Alert) -> bool {
        let cancel = self.shared.cancel.clone();
        for target in &self.targets {
            if cancel.is_cancelled() {
                return false;
            }
            let outcome = match target.deliver_until(alert, &cancel) {
                Ok(attempts) => Outcome::Delivered {
                    target: target.name(),
                    run: alert.run,
                    job: alert.job.clone(),
                    rule: alert.rule.clone(),
                    attempts,
                },
                Err(error) => Outcome::Failed(Failure {
                    target: target.name(),
                    run: alert.run,
                    job: alert.job.clone(),
                    rule: alert.rule.clone(),
                    error,
                }),
            };
            if let Some(f) = self.on_outcome.as_mut() {
                f(&outcome);
            }
            let mut state = self.shared.lock();
            match outcome {
                Outcome::Delivered { .. } => state.delivered += 1,
                Outcome::Failed(failure) => state.failed.push(failure),
            }
        }
        // Every target had its try, even one cut short by the deadline.
        self.shared.lock().finished += 1;
        !cancel.is_cancelled()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Stopped(Arc<Shared>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
        self.0.idle.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notifier_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Notifier>();
        shared::<DeliveryReport>();
    }
}
