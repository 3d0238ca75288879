//! Proofs for people outside the log: an inclusion bundle that shows one
//! entry is in a signed tree, and a consistency proof that one signed
//! tree extends another. Both serialize as JSON and verify offline with
//! nothing but the verifier key.
//!
//! Making a proof reads the leaf hashes of the log up to the checkpoint's
//! size into memory (32 bytes per entry).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::lines::LineReader;
use crate::log::{CheckpointLine, CHECKPOINTS_FILE, ENTRIES_FILE};
use crate::merkle::{self, leaf_hash, Hash, ProofError};
use crate::note::{NoteError, NoteVerifier};

/// A proof cannot be made or does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProveError {
    /// A file of the log could not be read.
    #[error("cannot read audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The log has no readable checkpoint.
    #[error("audit log {path} has no checkpoint; run `airlock audit checkpoint`")]
    NoCheckpoint {
        /// The checkpoints file.
        path: PathBuf,
    },
    /// The entry is not covered by the checkpoint.
    #[error("entry {index} is not covered by the checkpoint of size {size}")]
    NotCovered {
        /// The entry's index.
        index: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The log's entries do not hash to the checkpoint's root.
    #[error(
        "the log's first {size} entries do not match their checkpoint; run `airlock audit verify`"
    )]
    LogMismatch {
        /// The checkpoint's size.
        size: u64,
    },
    /// A note is not signed by the verifier key, or is malformed.
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
    /// A note's text is not a checkpoint.
    #[error("checkpoint note: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The proof does not verify.
    #[error("proof does not verify: {0}")]
    Proof(#[from] ProofError),
    /// A bundle's fields do not fit together.
    #[error("invalid proof: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
}

/// Everything needed to check offline that one entry is in the signed log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionBundle {
    /// The entry's line, exactly as logged (without the newline).
    pub entry: String,
    /// The entry's index (its leaf index).
    pub index: u64,
    /// The size of the tree the proof is for (the checkpoint's size).
    pub tree_size: u64,
    /// The inclusion proof, hex hashes, leaf side first.
    pub proof: Vec<String>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

/// Proof that the tree of `old_size` entries is a prefix of the tree of
/// `new_size` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The old tree's size.
    pub old_size: u64,
    /// The old tree's root, hex.
    pub old_root: String,
    /// The new tree's size.
    pub new_size: u64,
    /// The new tree's root, hex.
    pub new_root: String,
    /// The proof, hex hashes.
    pub proof: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ProveError {
    let path = path.to_owned();
    move |source| ProveError::Io { path, source }
}

fn hex_all(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| crate::hex::encode(h)).collect()
}

fn unhex(text: &str, what: &str) -> Result<Hash, ProveError> {
    crate::hex::decode_array::<32>(text.as_bytes()).ok_or_else(|| ProveError::Invalid {
        reason: format!("{what} is not a hex SHA-256 hash"),
    })
}

/// The last checkpoint line of the log (not checked against any key).
fn latest_checkpoint(dir: &Path) -> Result<(String, Checkpoint), ProveError> {
    let path = dir.join(CHECKPOINTS_FILE);
    let file = File::open(&path).map_err(io_err(&path))?;
    let mut reader = LineReader::new(file, 0);
    let mut latest = None;
    while let Some(line) = reader.next_line().map_err(io_err(&path))? {
        let Ok(parsed) = serde_json::from_slice::<CheckpointLine>(line.bytes) else {
            continue;
        };
        let Ok((text, _)) = crate::note::parse(&parsed.note) else {
            continue;
        };
        if let Ok(cp) = Checkpoint::parse(&text) {
            latest = Some((parsed.note, cp));
        }
    }
    latest.ok_or(ProveError::NoCheckpoint { path })
}

/// The leaf hashes of the first `size` entries, and the line of entry
/// `keep`.
fn read_leaves(
    dir: &Path,
    size: u64,
    keep: Option<u64>,
) -> Result<(Vec<Hash>, Option<String>), ProveError> {
    let path = dir.join(ENTRIES_FILE);
    let file = File::open(&path).map_err(io_err(&path))?;
    let mut reader = LineReader::new(file, 0);
    let mut leaves = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut kept = None;
    while leaves.len() < leaves.capacity() {
        let Some(line) = reader.next_line().map_err(io_err(&path))? else {
            break;
        };
        if keep == Some(u64::try_from(leaves.len()).unwrap_or(u64::MAX)) {
            kept = Some(String::from_utf8_lossy(line.bytes).into_owned());
        }
        leaves.push(leaf_hash(line.bytes));
    }
    if u64::try_from(leaves.len()).unwrap_or(u64::MAX) != size {
        return Err(ProveError::LogMismatch { size });
    }
    Ok((leaves, kept))
}

/// An inclusion bundle for entry `index` against the log's latest
/// checkpoint.
pub fn prove(dir: &Path, index: u64) -> Result<InclusionBundle, ProveError> {
    let (note, cp) = latest_checkpoint(dir)?;
    if index >= cp.size {
        return Err(ProveError::NotCovered {
            index,
            size: cp.size,
        });
    }
    let (leaves, entry) = read_leaves(dir, cp.size, Some(index))?;
    if merkle::root(&leaves) != cp.root {
        return Err(ProveError::LogMismatch { size: cp.size });
    }
    let proof = merkle::inclusion_proof(&leaves, index)?;
    Ok(InclusionBundle {
        entry: entry.ok_or(ProveError::LogMismatch { size: cp.size })?,
        index,
        tree_size: cp.size,
        proof: hex_all(&proof),
        checkpoint: note,
    })
}

/// Checks a bundle offline: the checkpoint is signed by `verifier`, the
/// entry's `index` field is the bundle's index, and the proof leads from
/// the entry's leaf hash to the checkpoint's root. Returns the checkpoint.
pub fn verify_bundle(
    bundle: &InclusionBundle,
    verifier: &NoteVerifier,
) -> Result<Checkpoint, ProveError> {
    let note = crate::note::open(&bundle.checkpoint, std::slice::from_ref(verifier))?;
    let cp = Checkpoint::parse(&note.text)?;
    if cp.size != bundle.tree_size {
        return Err(ProveError::Invalid {
            reason: format!(
                "tree size {} is not the checkpoint's size {}",
                bundle.tree_size, cp.size
            ),
        });
    }
    let fields = crate::entry::parse_fields(bundle.entry.as_bytes())
        .map_err(|reason| ProveError::Invalid { reason })?;
    if fields.index != bundle.index {
        return Err(ProveError::Invalid {
            reason: format!(
                "the entry's index is {}, not {}",
                fields.index, bundle.index
            ),
        });
    }
    let proof = bundle
        .proof
        .iter()
        .map(|h| unhex(h, "proof hash"))
        .collect::<Result<Vec<_>, _>>()?;
    merkle::verify_inclusion(
        bundle.index,
        cp.size,
        &leaf_hash(bundle.entry.as_bytes()),
        &proof,
        &cp.root,
    )?;
    Ok(cp)
}

/// A consistency proof between two checkpoint notes of the log in `dir`,
/// both signed by `verifier`; the log's entries must match both roots.
pub fn consistency(
    dir: &Path,
    old_note: &str,
    new_note: &str,
    verifier: &NoteVerifier,
) -> Result<ConsistencyProof, ProveError> {
    let open = |note: &str| -> Result<Checkpoint, ProveError> {
        let note = crate::note::open(note, std::slice::from_ref(verifier))?;
        Ok(Checkpoint::parse(&note.text)?)
    };
    let (old, new) = (open(old_note)?, open(new_note)?);
    if old.size > new.size {
        return Err(ProofError::SizeOrder {
            old: old.size,
            new: new.size,
        }
        .into());
    }
    let (leaves, _) = read_leaves(dir, new.size, None)?;
    if merkle::root(&leaves) != new.root {
        return Err(ProveError::LogMismatch { size: new.size });
    }
    let old_len = usize::try_from(old.size).unwrap_or(usize::MAX);
    if merkle::root(&leaves[..old_len]) != old.root {
        return Err(ProveError::LogMismatch { size: old.size });
    }
    let proof = merkle::consistency_proof(&leaves, old.size)?;
    Ok(ConsistencyProof {
        old_size: old.size,
        old_root: crate::hex::encode(&old.root),
        new_size: new.size,
        new_root: crate::hex::encode(&new.root),
        proof: hex_all(&proof),
    })
}

/// Checks a consistency proof (pure: sizes, roots and hashes only).
pub fn verify_consistency(proof: &ConsistencyProof) -> Result<(), ProveError> {
    let hashes = proof
        .proof
        .iter()
        .map(|h| unhex(h, "proof hash"))
        .collect::<Result<Vec<_>, _>>()?;
    merkle::verify_consistency(
        proof.old_size,
        proof.new_size,
        &unhex(&proof.old_root, "old root")?,
        &unhex(&proof.new_root, "new root")?,
        &hashes,
    )?;
    Ok(())
}
