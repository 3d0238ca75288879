//! tlog checkpoints (<https://c2sp.org/tlog-checkpoint>): the body of the
//! signed note that commits to a tree size and root.
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <base64 root hash>
//! [extension lines]
//! ```
//!
//! Airlock adds one extension line, `last-leaf <hex>`, the leaf hash of
//! entry `size - 1` (absent for size 0). The root already commits to it;
//! the line lets the verifier name the very last entry of a checkpoint as
//! the bad one when it alone was edited (see [`crate::verify`]).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::merkle::Hash;

/// The prefix of Airlock's last-leaf extension line.
pub const LAST_LEAF_PREFIX: &str = "last-leaf ";

/// Why a checkpoint body cannot be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The body does not have the checkpoint's lines.
    #[error("malformed checkpoint: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A checkpoint: which tree a log's signer committed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name (the first line), by convention the key name.
    pub origin: String,
    /// The tree size: how many entries the checkpoint covers.
    pub size: u64,
    /// The root hash of the tree over those entries.
    pub root: Hash,
    /// Extension lines, in order, without their newlines.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint with Airlock's `last-leaf` extension when `last_leaf`
    /// is given.
    pub fn new(origin: &str, size: u64, root: Hash, last_leaf: Option<&Hash>) -> Checkpoint {
        Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: last_leaf
                .map(|h| format!("{LAST_LEAF_PREFIX}{}", crate::hex::encode(h)))
                .into_iter()
                .collect(),
        }
    }

    /// The note text: origin, size, root and extension lines, each ending
    /// in a newline.
    pub fn body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for ext in &self.extensions {
            body.push_str(ext);
            body.push('\n');
        }
        body
    }

    /// Parses a note text as a checkpoint body.
    pub fn parse(body: &str) -> Result<Checkpoint, CheckpointError> {
        let malformed = |reason| CheckpointError::Malformed { reason };
        let lines = body
            .strip_suffix('\n')
            .ok_or(malformed("does not end in a newline"))?;
        let mut lines = lines.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(malformed("empty origin line"));
        }
        let size = lines.next().ok_or(malformed("no size line"))?;
        let canonical = size == "0" || !size.starts_with('0');
        if !canonical || size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed("size is not a decimal number"));
        }
        let size: u64 = size.parse().map_err(|_| malformed("size is too big"))?;
        let root = lines.next().ok_or(malformed("no root hash line"))?;
        let root: Hash = BASE64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(malformed("root is not base64 of 32 bytes"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(malformed("empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The `last-leaf` extension's hash, if present and well-formed.
    pub fn last_leaf(&self) -> Option<Hash> {
        self.extensions.iter().find_map(|e| {
            crate::hex::decode_array::<32>(e.strip_prefix(LAST_LEAF_PREFIX)?.as_bytes())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let cp = Checkpoint::new("example.com/log", 42, [9; 32], Some(&[1; 32]));
        let body = cp.body();
        assert!(body.starts_with("example.com/log\n42\nCQkJ"));
        let parsed = Checkpoint::parse(&body).expect("parse");
        assert_eq!(parsed, cp);
        assert_eq!(parsed.last_leaf(), Some([1; 32]));
        let empty = Checkpoint::new("o", 0, [0; 32], None);
        assert_eq!(Checkpoint::parse(&empty.body()).expect("parse"), empty);
    }

    #[test]
    fn malformed() {
        let root = BASE64.encode([0_u8; 32]);
        for bad in [
            String::new(),
            "o\n1\n".to_owned(),
            format!("o\n01\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n1\n{root}"),
            format!("\n1\n{root}\n"),
            format!("o\n1\n{root}\n\n"),
            "o\n1\nAAAA\n".to_owned(),
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
