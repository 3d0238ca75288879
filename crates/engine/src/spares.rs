//! Sandboxes prepared ahead of the jobs that will use them.
//!
//! A spawner thread prepares up to `parallel` spares (at most one per job)
//! while the engine records the run and earlier jobs run, so a job's
//! critical path keeps only its own setup (source, workspace, limits,
//! hardening). The thread stays alive until the run ends: a sandbox's
//! parent-death signal is tied to the thread that cloned it.

use std::sync::{mpsc, Mutex};
use std::thread::Scope;

use sandbox::{Layers, Spare};

use crate::error::EngineError;

/// The spare pool of one run.
pub(crate) struct Spares {
    ready: Mutex<Option<mpsc::Receiver<Spare>>>,
    stop: Mutex<Option<mpsc::Sender<()>>>,
}

impl Spares {
    /// Starts the spawner thread in `scope`.
    pub(crate) fn start<'scope>(
        scope: &'scope Scope<'scope, '_>,
        count: usize,
        parallel: usize,
        layers: Layers,
        cgroups: bool,
    ) -> Result<Spares, EngineError> {
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Spare>(parallel.max(1));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("spares".into())
            .spawn_scoped(scope, move || {
                for _ in 0..count {
                    match Spare::prepare(layers, cgroups) {
                        Ok(spare) => {
                            if ready_tx.send(spare).is_err() {
                                break;
                            }
                        }
                        // Jobs then build their sandbox themselves, which
                        // reports the error where it belongs.
                        Err(e) => {
                            tracing::debug!("no spare sandbox: {e}");
                            break;
                        }
                    }
                }
                drop(ready_tx);
                let _ = stop_rx.recv();
            })
            .map_err(EngineError::Thread)?;
        Ok(Spares {
            ready: Mutex::new(Some(ready_rx)),
            stop: Mutex::new(Some(stop_tx)),
        })
    }

    /// The next spare, waiting for it if one is being prepared; `None` when
    /// the spawner has stopped.
    pub(crate) fn take(&self) -> Option<Spare> {
        let ready = self.ready.lock().ok()?;
        ready.as_ref()?.recv().ok()
    }

    /// Kills the unclaimed spares (as they drop), stops production and lets
    /// the spawner thread end. Call when every job is done.
    pub(crate) fn close(&self) {
        drop(self.ready.lock().ok().and_then(|mut r| r.take()));
        drop(self.stop.lock().ok().and_then(|mut s| s.take()));
    }
}
