//! The RFC 6962 / RFC 9162 Merkle tree: hashes, an incremental builder,
//! and inclusion and consistency proofs.
//!
//! - leaf hash: `SHA-256(0x00 ‖ data)`;
//! - node hash: `SHA-256(0x01 ‖ left ‖ right)`;
//! - the tree over `n > 1` leaves splits them at `k`, the largest power of
//!   two smaller than `n`: `MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n]))`;
//!   the empty tree's root is `SHA-256("")`.
//!
//! [`Frontier`] is the compact range `[0, n)`: the roots of the perfect
//! subtrees that make up the first `n` leaves, at most one per bit of `n`,
//! so O(log n) memory. The log appends through it and the verifier streams
//! through it.
//!
//! Proof generation ([`inclusion_proof`], [`consistency_proof`]) follows
//! RFC 9162 §2.1.3.1 and §2.1.4.1 over a slice of leaf hashes; proof
//! verification ([`verify_inclusion`], [`verify_consistency`]) follows
//! §2.1.3.2 and §2.1.4.2 and needs nothing but hashes and sizes.

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, a node hash or a root.
pub type Hash = [u8; 32];

/// Why a proof does not verify, or cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The old tree of a consistency proof is bigger than the new one.
    #[error("old tree size {old} is bigger than new tree size {new}")]
    SizeOrder {
        /// The old size.
        old: u64,
        /// The new size.
        new: u64,
    },
    /// The proof has the wrong number of hashes for the sizes given.
    #[error("proof has the wrong number of hashes ({len}) for these tree sizes")]
    WrongLength {
        /// How many hashes the proof has.
        len: usize,
    },
    /// The proof does not lead to the expected root.
    #[error("proof does not match the root hash")]
    RootMismatch,
    /// Two trees of the same size have different roots.
    #[error("trees of the same size have different roots")]
    SameSizeDifferentRoots,
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf hash of `data`: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(data)
        .finalize()
        .into()
}

/// The hash of an inner node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The largest power of two smaller than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

fn len_u64(leaves: &[Hash]) -> u64 {
    u64::try_from(leaves.len()).unwrap_or(u64::MAX)
}

/// `leaves[..at]` and `leaves[at..]` for a split point below the length.
fn split_at(leaves: &[Hash], at: u64) -> (&[Hash], &[Hash]) {
    // `at` < len, which is a usize.
    leaves.split_at(usize::try_from(at).unwrap_or(leaves.len()))
}

/// The Merkle tree hash (root) of a list of leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for leaf in leaves {
        frontier.push(*leaf);
    }
    frontier.root()
}

/// The compact range `[0, size)`: the roots of the perfect subtrees that
/// make up a tree's first `size` leaves, largest first. Appending a leaf
/// merges equal-sized subtrees, like a binary counter carrying; the root at
/// the current size folds them from the right.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// How many leaves have been pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect subtree roots, largest (leftmost) first: one per set bit
    /// of [`Frontier::size`].
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// The frontier of a tree of `size` leaves from its subtree roots
    /// (as [`Frontier::nodes`] gives them), if there is one per set bit.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Frontier> {
        (usize::try_from(size.count_ones()).ok() == Some(nodes.len()))
            .then_some(Frontier { size, nodes })
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut size = self.size;
        while size & 1 == 1 {
            // The invariant (one node per set bit) guarantees a node here.
            let Some(left) = self.nodes.pop() else { break };
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// The root of the tree over every leaf pushed so far.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// The inclusion proof (audit path) of leaf `index` in the tree over
/// `leaves` (RFC 9162 §2.1.3.1): at most ⌈log2 n⌉ hashes, leaf side first.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let size = len_u64(leaves);
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(index, leaves, &mut proof);
    Ok(proof)
}

fn path(m: u64, leaves: &[Hash], out: &mut Vec<Hash>) {
    let n = len_u64(leaves);
    if n <= 1 {
        return;
    }
    let k = split(n);
    let (left, right) = split_at(leaves, k);
    if m < k {
        path(m, left, out);
        out.push(root(right));
    } else {
        path(m - k, right, out);
        out.push(root(left));
    }
}

/// The root that `proof` leads to from leaf `index` with hash `leaf` in a
/// tree of `size` leaves (RFC 9162 §2.1.3.2).
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let wrong_length = ProofError::WrongLength { len: proof.len() };
    let (mut fnode, mut snode) = (index, size - 1);
    let mut hash = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(wrong_length);
        }
        if fnode & 1 == 1 || fnode == snode {
            hash = node_hash(p, &hash);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            hash = node_hash(&hash, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(wrong_length);
    }
    Ok(hash)
}

/// Checks that leaf `index` with hash `leaf` is in the tree of `size`
/// leaves with root `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion(index, size, leaf, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The consistency proof from the tree over `leaves[..old_size]` to the
/// tree over all of `leaves` (RFC 9162 §2.1.4.1). Empty when `old_size` is
/// 0 or the whole list.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, ProofError> {
    let new_size = len_u64(leaves);
    if old_size > new_size {
        return Err(ProofError::SizeOrder {
            old: old_size,
            new: new_size,
        });
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < new_size {
        subproof(old_size, leaves, true, &mut proof);
    }
    Ok(proof)
}

fn subproof(m: u64, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = len_u64(leaves);
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    let (left, right) = split_at(leaves, k);
    if m <= k {
        subproof(m, left, complete, out);
        out.push(root(right));
    } else {
        subproof(m - k, right, false, out);
        out.push(root(left));
    }
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a
/// prefix of the tree of `new_size` leaves with root `new_root`
/// (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    let wrong_length = ProofError::WrongLength { len: proof.len() };
    if old_size > new_size {
        return Err(ProofError::SizeOrder {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(wrong_length);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::SameSizeDifferentRoots)
        };
    }
    if old_size == 0 {
        // The empty tree is a prefix of every tree.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(wrong_length)
        };
    }
    let Some((first, rest)) = proof.split_first() else {
        return Err(wrong_length);
    };
    // If the old tree is a perfect subtree of the new one, its root is
    // the first node of the path.
    let (start, path) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        (first, rest)
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*start, *start);
    for c in path {
        if snode == 0 {
            return Err(wrong_length);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(wrong_length);
    }
    if fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_points() {
        assert_eq!(split(2), 1);
        assert_eq!(split(3), 2);
        assert_eq!(split(4), 2);
        assert_eq!(split(5), 4);
        assert_eq!(split(1 << 40), 1 << 39);
        assert_eq!(split((1 << 40) + 1), 1 << 40);
    }

    #[test]
    fn frontier_matches_recursive_definition() {
        fn mth(leaves: &[Hash]) -> Hash {
            match leaves.len() {
                0 => empty_root(),
                1 => leaves[0],
                n => {
                    let k = usize::try_from(split(n as u64)).expect("small");
                    node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
                }
            }
        }
        let leaves: Vec<Hash> = (0..70_u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), mth(&[]));
        for (i, leaf) in leaves.iter().enumerate() {
            frontier.push(*leaf);
            assert_eq!(frontier.root(), mth(&leaves[..=i]), "size {}", i + 1);
            assert_eq!(frontier.nodes().len(), (i + 1).count_ones() as usize);
        }
    }
}
