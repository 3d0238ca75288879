//! `airlock audit ...`, and opening the audit log for the other commands.
//!
//! The log lives in `HOME/audit/`, its signing key in `HOME/keys/audit.key`
//! (0600) and the matching verifier key in `HOME/keys/audit.pub`. Someone
//! who controls the host can replace `audit.pub` along with the log; keep a
//! copy of it (and checkpoints, `airlock audit checkpoint`) elsewhere and
//! verify with `--key`/`--witness`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use audit::{AuditKey, AuditLog, KeyStatus, NoteVerifier};
use clap::Subcommand;
use engine::AuditTrail;
use serde_json::json;

use crate::exit::{Exit, EXIT_OK};

/// Exit code of `audit verify` when the log or a proof does not verify.
pub const EXIT_TAMPERED: i32 = 1;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the Merkle tree over every entry, check every checkpoint's
    /// signature and root, and name the first bad entry; or, with
    /// `--proof`, check a proof from `audit prove` or `audit consistency`
    /// offline. Exit 0 if everything verifies, 1 if not.
    Verify {
        /// Verifier key to trust (a file holding `NAME+ID+KEY`, as in
        /// `keys/audit.pub`). Default: `HOME/keys/audit.pub`; pin a copy
        /// kept off this host, since whoever can rewrite the log can also
        /// replace that file.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// A checkpoint kept elsewhere (from `audit checkpoint`): the log
        /// must contain it (detects a log rolled back with its checkpoints).
        #[arg(long = "witness", value_name = "FILE")]
        witnesses: Vec<PathBuf>,
        /// Check this proof file (JSON from `audit prove` or
        /// `audit consistency`) instead of the log.
        #[arg(long, value_name = "FILE")]
        proof: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the entries of the log (all, or one run's).
    Show {
        /// Only the entries of this run.
        #[arg(long, value_name = "RUN")]
        run: Option<String>,
        /// One JSON object per line, as stored.
        #[arg(long)]
        json: bool,
    },
    /// Print entry N with its inclusion proof and the signed checkpoint it
    /// is proven against, as JSON that `audit verify --proof` (or any
    /// RFC 6962 verifier) checks offline.
    Prove {
        /// Entry index (from 0).
        index: u64,
    },
    /// Sign a checkpoint over the log as it is now and print it (a C2SP
    /// signed note): ship it to a witness outside this host.
    Checkpoint,
    /// Prove that the log at checkpoint NEW extends the log at checkpoint
    /// OLD (files holding signed notes); prints the proof as JSON.
    Consistency {
        /// The older checkpoint.
        old: PathBuf,
        /// The newer checkpoint.
        new: PathBuf,
        /// Verifier key (default: `HOME/keys/audit.pub`).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
}

/// The log's directory under the state home.
pub fn log_dir(home: &Path) -> PathBuf {
    home.join("audit")
}

/// Opens the audit log (creating it and its key on first use) and starts
/// a trail that writes to it. If the log cannot be written, `on_failure`
/// is set. Key creation and crash recovery are themselves recorded.
pub fn open_trail(home: &Path, on_failure: Arc<AtomicBool>) -> Result<Arc<AuditTrail>> {
    let (log, created) = open_log(home)?;
    let trail = Arc::new(AuditTrail::start(log, on_failure));
    if let Some(verifier) = created {
        trail.record("audit_key_created", &json!({ "verifier": verifier }));
    }
    Ok(trail)
}

/// Opens the log; returns the new verifier key if the key was created now.
fn open_log(home: &Path) -> Result<(AuditLog, Option<String>)> {
    let (key, status) = AuditKey::load_or_create(&home.join("keys"))
        .with_context(|| format!("cannot load the audit key in {}", home.display()))?;
    let created = (status == KeyStatus::Created).then(|| key.verifier_key());
    // Batches are made durable by the checkpoint every command signs when
    // it ends, not one by one: a run does not wait on the disk meanwhile.
    let options = audit::Options {
        sync_batches: false,
        ..audit::Options::default()
    };
    let (log, recovery) = AuditLog::open_with(&log_dir(home), key, options)
        .with_context(|| format!("cannot open the audit log in {}", log_dir(home).display()))?;
    if let Some(r) = recovery {
        eprintln!(
            "airlock: the audit log ended in a torn write (a crash): dropped {} byte(s) and recorded the recovery; it now holds {} entries",
            r.dropped_bytes + r.dropped_checkpoint_bytes,
            r.size
        );
    }
    Ok((log, created))
}

pub fn command(home: &Path, command: AuditCommand) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    let dir = log_dir(home);
    match command {
        AuditCommand::Verify {
            key,
            witnesses,
            proof,
            json,
        } => {
            let verifier = verifier(home, key.as_deref())?;
            if let Some(proof) = proof {
                return verify_proof(&proof, &verifier, json);
            }
            if !dir.join("entries.jsonl").exists() {
                return Err(Exit::bad_input(format!("no audit log in {}", dir.display())).into());
            }
            let mut notes = Vec::new();
            for w in &witnesses {
                notes.push(
                    std::fs::read_to_string(w)
                        .map_err(|e| Exit::bad_input(format!("{}: {e}", w.display())))?,
                );
            }
            let report = audit::verify_with_witnesses(&dir, &verifier, &notes)
                .with_context(|| format!("cannot verify the audit log in {}", dir.display()))?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else if let Some(bad) = &report.first_bad {
                writeln!(
                    out,
                    "audit log {}: FAILED at entry {}: {}",
                    dir.display(),
                    bad.index,
                    bad.reason
                )?;
                for p in &report.problems {
                    writeln!(out, "  {}", serde_json::to_string(p)?)?;
                }
            } else {
                writeln!(
                    out,
                    "audit log {}: ok: {} entries, {} checkpoints, root {}",
                    dir.display(),
                    report.entries,
                    report.checkpoints,
                    report.root
                )?;
            }
            Ok(if report.is_ok() {
                EXIT_OK
            } else {
                EXIT_TAMPERED
            })
        }
        AuditCommand::Show { run, json } => {
            let entries = audit::entries(&dir, run.as_deref())
                .with_context(|| format!("cannot read the audit log in {}", dir.display()))?;
            for e in entries {
                let e = e?;
                if json {
                    writeln!(out, "{}", e.line)?;
                } else {
                    let v = &e.value;
                    let kind = v["kind"].as_str().unwrap_or("?");
                    let time = v["time"].as_str().unwrap_or("");
                    let mut rest = v.as_object().cloned().unwrap_or_default();
                    for k in ["kind", "time", "index", "prev"] {
                        rest.remove(k);
                    }
                    writeln!(
                        out,
                        "{:>6}  {time}  {kind:<20} {}",
                        e.index,
                        crate::sanitize::for_terminal(
                            serde_json::to_string(&rest)?.as_bytes(),
                            false
                        )
                    )?;
                }
            }
            Ok(EXIT_OK)
        }
        AuditCommand::Prove { index } => {
            let bundle = audit::prove(&dir, index).map_err(|e| Exit::bad_input(e.to_string()))?;
            writeln!(out, "{}", serde_json::to_string_pretty(&bundle)?)?;
            Ok(EXIT_OK)
        }
        AuditCommand::Checkpoint => {
            let (log, _) = open_log(home)?;
            let signed = log.checkpoint()?;
            write!(out, "{}", signed.note)?;
            Ok(EXIT_OK)
        }
        AuditCommand::Consistency { old, new, key } => {
            let verifier = verifier(home, key.as_deref())?;
            let read = |p: &Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| Exit::bad_input(format!("{}: {e}", p.display())))
            };
            let proof = audit::consistency(&dir, &read(&old)?, &read(&new)?, &verifier)
                .map_err(|e| Exit::bad_input(e.to_string()))?;
            audit::verify_consistency(&proof)
                .map_err(|e| Exit::bad_input(format!("the proof does not verify: {e}")))?;
            writeln!(out, "{}", serde_json::to_string_pretty(&proof)?)?;
            Ok(EXIT_OK)
        }
    }
}

/// The verifier key: `--key FILE`, or the log's own `keys/audit.pub`.
fn verifier(home: &Path, key: Option<&Path>) -> Result<NoteVerifier> {
    let path = key.map_or_else(|| home.join("keys").join("audit.pub"), Path::to_owned);
    audit::key::read_verifier_key(&path)
        .map_err(|e| Exit::bad_input(format!("verifier key {}: {e}", path.display())).into())
}

/// Checks an inclusion bundle or a consistency proof offline.
fn verify_proof(path: &Path, verifier: &NoteVerifier, json: bool) -> Result<i32> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Exit::bad_input(format!("{}: {e}", path.display())))?;
    let outcome = if let Ok(bundle) = serde_json::from_str::<audit::InclusionBundle>(&text) {
        audit::verify_bundle(&bundle, verifier).map(|cp| {
            format!(
                "entry {} is in the log of size {} signed by {}",
                bundle.index,
                cp.size,
                verifier.name()
            )
        })
    } else if let Ok(proof) = serde_json::from_str::<audit::ConsistencyProof>(&text) {
        audit::verify_consistency(&proof)
            .map(|()| "the newer checkpoint extends the older one".to_string())
    } else {
        return Err(Exit::bad_input(format!(
            "{}: not an inclusion bundle or consistency proof",
            path.display()
        ))
        .into());
    };
    let mut out = std::io::stdout().lock();
    let ok = outcome.is_ok();
    let message = match outcome {
        Ok(m) => format!("ok: {m}"),
        Err(e) => format!("FAILED: {e}"),
    };
    if json {
        writeln!(out, "{}", json!({ "ok": ok, "detail": message }))?;
    } else {
        writeln!(out, "{}: {message}", path.display())?;
    }
    Ok(if ok { EXIT_OK } else { EXIT_TAMPERED })
}
