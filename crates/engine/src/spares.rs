//! Sandboxes prepared ahead of the jobs that will use them.
//!
//! A spawner thread prepares spares while the engine does other work
//! (parsing, recording the run, earlier jobs), at most `parallel` waiting,
//! and only as many as it has been asked for ([`Spares::expect`]), so a
//! job's critical path keeps only its own setup (source, workspace, limits,
//! hardening). The binary starts the pool before it even reads the
//! pipeline, asking for one; the engine raises that to the number of jobs.
//! The thread stays alive until the pool is closed: a sandbox's parent-death
//! signal is tied to the thread that cloned it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::Scope;

use sandbox::{Layers, Spare};

use crate::error::EngineError;

/// The spare pool of one run.
pub struct Spares {
    ready: Mutex<Option<mpsc::Receiver<Spare>>>,
    wanted: Arc<AtomicUsize>,
    wake: Mutex<Option<mpsc::Sender<()>>>,
}

impl Spares {
    /// Starts the spawner thread in `scope`, asked for one spare. `cgroups`
    /// says whether spares get a (limitless, until claimed) cgroup; a spare
    /// that does not match the job that claims it is discarded.
    pub fn start<'scope>(
        scope: &'scope Scope<'scope, '_>,
        parallel: usize,
        layers: Layers,
        cgroups: bool,
    ) -> Result<Spares, EngineError> {
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Spare>(parallel.max(1));
        let (wake_tx, wake_rx) = mpsc::channel::<()>();
        let wanted = Arc::new(AtomicUsize::new(1));
        let target = Arc::clone(&wanted);
        std::thread::Builder::new()
            .name("spares".into())
            .spawn_scoped(scope, move || {
                let mut made = 0;
                let mut ready_tx = Some(ready_tx);
                loop {
                    while made < target.load(Ordering::SeqCst) {
                        let Some(tx) = &ready_tx else { break };
                        made += 1;
                        match Spare::prepare(layers, cgroups) {
                            Ok(spare) => {
                                if tx.send(spare).is_err() {
                                    ready_tx = None;
                                }
                            }
                            // Jobs then build their sandbox themselves,
                            // which reports the error where it belongs.
                            Err(e) => {
                                tracing::debug!("no spare sandbox: {e}");
                                ready_tx = None;
                            }
                        }
                    }
                    // More wanted, or closed (the sender dropped).
                    if wake_rx.recv().is_err() {
                        break;
                    }
                }
            })
            .map_err(EngineError::Thread)?;
        Ok(Spares {
            ready: Mutex::new(Some(ready_rx)),
            wanted,
            wake: Mutex::new(Some(wake_tx)),
        })
    }

    /// Asks for `count` spares in all (it never lowers the count).
    pub fn expect(&self, count: usize) {
        self.wanted.fetch_max(count, Ordering::SeqCst);
        if let Ok(wake) = self.wake.lock() {
            if let Some(wake) = wake.as_ref() {
                let _ = wake.send(());
            }
        }
    }

    /// The next spare, waiting for it if one is being prepared; `None` when
    /// the spawner has stopped.
    pub(crate) fn take(&self) -> Option<Spare> {
        let ready = self.ready.lock().ok()?;
        ready.as_ref()?.recv().ok()
    }

    /// Kills the unclaimed spares (as they drop), stops production and lets
    /// the spawner thread end. Call when every job is done.
    pub fn close(&self) {
        drop(self.ready.lock().ok().and_then(|mut r| r.take()));
        drop(self.wake.lock().ok().and_then(|mut w| w.take()));
    }
}
