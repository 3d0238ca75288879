//! RFC 6962 test vectors, from transparency-dev/merkle
//! (https://github.com/transparency-dev/merkle, `proof/verify_test.go`:
//! `leaves`, `roots`, `inclusionProofs`, `consistencyProofs`), the same
//! vectors as Certificate Transparency's C++ and Go implementations.

use audit::merkle::{self, leaf_hash, Frontier, Hash, ProofError};

fn h(hex: &str) -> Hash {
    audit::hex::decode_array::<32>(hex.as_bytes()).expect("32-byte hex")
}

fn leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    })
    .collect()
}

/// Roots of the trees over the first 1..=8 leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (1-based leaf, tree size, proof), as in the Go file.
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        3,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        2,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn leaf_hashes() -> Vec<Hash> {
    leaves().iter().map(|l| leaf_hash(l)).collect()
}

#[test]
fn empty_tree_root() {
    assert_eq!(
        merkle::empty_root(),
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
}

#[test]
fn roots_of_the_reference_trees() {
    let hashes = leaf_hashes();
    let mut frontier = Frontier::new();
    for (i, leaf) in hashes.iter().enumerate() {
        frontier.push(*leaf);
        assert_eq!(frontier.root(), h(ROOTS[i]), "root of {} leaves", i + 1);
        assert_eq!(merkle::root(&hashes[..=i]), h(ROOTS[i]));
    }
}

#[test]
fn inclusion_proofs() {
    let hashes = leaf_hashes();
    for (leaf, size, proof) in INCLUSION {
        let index = leaf - 1;
        let size_usize = usize::try_from(size).expect("small");
        let want: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
        let got = merkle::inclusion_proof(&hashes[..size_usize], index).expect("proof");
        assert_eq!(got, want, "proof of leaf {index} in tree {size}");
        let root = h(ROOTS[size_usize - 1]);
        let leaf_hash = hashes[usize::try_from(index).expect("small")];
        merkle::verify_inclusion(index, size, &leaf_hash, &want, &root).expect("verifies");
        // Corruptions as in the Go tests.
        let fails = |i: u64, s: u64, l: &Hash, p: &[Hash], r: &Hash| {
            merkle::verify_inclusion(i, s, l, p, r).is_err()
        };
        if index > 0 {
            assert!(fails(index - 1, size, &leaf_hash, &want, &root));
        }
        assert!(fails(index + 1, size, &leaf_hash, &want, &root));
        assert!(fails(index, size * 2, &leaf_hash, &want, &root));
        assert!(fails(index, size, &[0; 32], &want, &root));
        let mut longer = want.clone();
        longer.push(root);
        assert!(fails(index, size, &leaf_hash, &longer, &root));
        for i in 0..want.len() {
            let mut flipped = want.clone();
            flipped[i][0] ^= 8;
            assert!(fails(index, size, &leaf_hash, &flipped, &root));
        }
        if !want.is_empty() {
            assert!(fails(
                index,
                size,
                &leaf_hash,
                &want[..want.len() - 1],
                &root
            ));
        }
    }
    assert_eq!(
        merkle::inclusion_proof(&hashes, 8),
        Err(ProofError::IndexOutOfRange { index: 8, size: 8 })
    );
}

#[test]
fn consistency_proofs() {
    let hashes = leaf_hashes();
    for (old, new, proof) in CONSISTENCY {
        let (old_us, new_us) = (
            usize::try_from(old).expect("small"),
            usize::try_from(new).expect("small"),
        );
        let want: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
        let got = merkle::consistency_proof(&hashes[..new_us], old).expect("proof");
        assert_eq!(got, want, "consistency {old} -> {new}");
        let (r1, r2) = (h(ROOTS[old_us - 1]), h(ROOTS[new_us - 1]));
        merkle::verify_consistency(old, new, &r1, &r2, &want).expect("verifies");
        if want.is_empty() {
            continue;
        }
        let fails = |o: u64, n: u64, a: &Hash, b: &Hash, p: &[Hash]| {
            merkle::verify_consistency(o, n, a, b, p).is_err()
        };
        assert!(fails(old - 1, new, &r1, &r2, &want));
        assert!(fails(old + 1, new, &r1, &r2, &want));
        assert!(fails(old, new * 2, &r1, &r2, &want));
        assert!(fails(old, new, &r2, &r1, &want));
        assert!(fails(old, new, &r1, &r2, &[]));
        assert!(fails(old, new, &r1, &r2, &want[..want.len() - 1]));
        let mut longer = want.clone();
        longer.push(r1);
        assert!(fails(old, new, &r1, &r2, &longer));
        let mut prefixed = vec![want[0]];
        prefixed.extend_from_slice(&want);
        assert!(fails(old, new, &r1, &r2, &prefixed));
        for i in 0..want.len() {
            let mut flipped = want.clone();
            flipped[i][0] ^= 16;
            assert!(fails(old, new, &r1, &r2, &flipped));
        }
    }
    // Always consistent, and never with a non-empty proof.
    let (a, b) = ([1; 32], [2; 32]);
    assert!(merkle::verify_consistency(0, 0, &a, &a, &[]).is_ok());
    assert!(merkle::verify_consistency(0, 1, &a, &b, &[]).is_ok());
    assert!(merkle::verify_consistency(1, 1, &a, &b, &[]).is_err());
    assert!(merkle::verify_consistency(2, 1, &a, &b, &[]).is_err());
    assert!(merkle::verify_consistency(1, 2, &a, &b, &[]).is_err());
    assert!(merkle::verify_consistency(1, 1, &a, &a, &[a]).is_err());
}
