//! Property tests of the Merkle proofs over random trees.

use audit::merkle::{self, leaf_hash, Hash};
use proptest::prelude::*;

fn ceil_log2(n: u64) -> usize {
    if n <= 1 {
        0
    } else {
        usize::try_from(64 - (n - 1).leading_zeros()).expect("small")
    }
}

fn tree(n: usize, seed: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&[seed.to_le_bytes(), (i as u64).to_le_bytes()].concat()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn inclusion_proofs_verify_and_flips_fail(
        n in 1_usize..300, seed in any::<u64>(), pick in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(), bit in 0_u8..8,
    ) {
        let leaves = tree(n, seed);
        let root = merkle::root(&leaves);
        let size = n as u64;
        let index = pick.index(n);
        let proof = merkle::inclusion_proof(&leaves, index as u64).expect("proof");
        prop_assert!(proof.len() <= ceil_log2(size));
        merkle::verify_inclusion(index as u64, size, &leaves[index], &proof, &root).expect("verifies");
        // Any flipped bit, in the leaf, the root or the proof, fails.
        let mut leaf = leaves[index];
        leaf[usize::from(bit) % 32] ^= 1 << bit;
        prop_assert!(merkle::verify_inclusion(index as u64, size, &leaf, &proof, &root).is_err());
        let mut bad_root = root;
        bad_root[31] ^= 1 << bit;
        prop_assert!(merkle::verify_inclusion(index as u64, size, &leaves[index], &proof, &bad_root).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = flip.index(bad.len());
            bad[i][usize::from(bit)] ^= 1 << bit;
            prop_assert!(merkle::verify_inclusion(index as u64, size, &leaves[index], &bad, &root).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_flips_fail(
        n in 1_usize..300, seed in any::<u64>(), pick in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(), bit in 0_u8..8,
    ) {
        let leaves = tree(n, seed);
        let old = pick.index(n) + 1;
        let (r1, r2) = (merkle::root(&leaves[..old]), merkle::root(&leaves));
        let proof = merkle::consistency_proof(&leaves, old as u64).expect("proof");
        prop_assert!(proof.len() <= ceil_log2(n as u64) + 1);
        merkle::verify_consistency(old as u64, n as u64, &r1, &r2, &proof).expect("verifies");
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = flip.index(bad.len());
            bad[i][usize::from(bit)] ^= 1 << bit;
            prop_assert!(merkle::verify_consistency(old as u64, n as u64, &r1, &r2, &bad).is_err());
            let mut bad_r1 = r1;
            bad_r1[0] ^= 1 << bit;
            prop_assert!(merkle::verify_consistency(old as u64, n as u64, &bad_r1, &r2, &proof).is_err());
        }
    }
}
