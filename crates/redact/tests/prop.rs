//! Property tests: however the output is chunked and whenever the stream
//! goes idle, the redactor's output equals masking the whole text at once
//! with a simple reference, and no form of any secret survives.
//!
//! The default run checks 100,000 inputs (5,000 cases of random secrets,
//! each with 20 random texts and chunkings). Set `REDACT_PROPTEST_SCALE=N`
//! to run N times as many (best in a release build:
//! `REDACT_PROPTEST_SCALE=10 cargo test --release -p redact --test prop`).

use std::cell::Cell;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm, TestRunner};
use redact::{variants, Patterns, Redactor, MASK};

/// Masks every occurrence of every pattern in `text`: mark every byte
/// covered by an occurrence (naive search), then write one mask for each
/// maximal run of marked bytes.
fn reference(patterns: &[Vec<u8>], text: &[u8]) -> Vec<u8> {
    let mut marked = vec![false; text.len()];
    for p in patterns {
        if p.len() > text.len() {
            continue;
        }
        for i in 0..=text.len() - p.len() {
            if text[i] == p[0] && &text[i..i + p.len()] == p.as_slice() {
                for m in &mut marked[i..i + p.len()] {
                    *m = true;
                }
            }
        }
    }
    let mut out = Vec::with_capacity(text.len());
    for i in 0..text.len() {
        if !marked[i] {
            out.push(text[i]);
        } else if i == 0 || !marked[i - 1] {
            out.extend_from_slice(MASK);
        }
    }
    out
}

fn all_patterns(secrets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    secrets
        .iter()
        .flat_map(|s| variants(s))
        .map(|v| v.bytes().to_vec())
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w[0] == needle[0] && w == needle)
}

/// What the text is made of.
#[derive(Clone, Debug)]
enum Piece {
    /// Bytes of filler.
    Noise(Vec<u8>),
    /// Form `form` of secret `secret` (indices taken modulo the counts),
    /// cut to `keep` of its bytes from the start or from the end (a near
    /// miss), or whole when `keep` is None.
    Form {
        secret: usize,
        form: usize,
        keep: Option<(usize, bool)>,
    },
}

/// How the text is fed.
#[derive(Clone, Debug)]
struct Feed {
    /// Chunk lengths, used in turn; the last chunk takes what is left.
    sizes: Vec<usize>,
    /// Whether to call `flush_safe` after each chunk, used in turn.
    flushes: Vec<bool>,
}

/// The text: the pieces one after the other. `forms[i]` lists the forms
/// of secret `i`.
fn build_text(forms: &[Vec<Vec<u8>>], pieces: &[Piece]) -> Vec<u8> {
    let mut text = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Noise(bytes) => text.extend_from_slice(bytes),
            Piece::Form { secret, form, keep } => {
                let forms = &forms[secret % forms.len()];
                let bytes = &forms[form % forms.len()];
                match keep {
                    None => text.extend_from_slice(bytes),
                    Some((n, from_start)) => {
                        let n = n % bytes.len();
                        if *from_start {
                            text.extend_from_slice(&bytes[..n]);
                        } else {
                            text.extend_from_slice(&bytes[bytes.len() - n..]);
                        }
                    }
                }
            }
        }
    }
    text
}

/// Runs the redactor over `text` fed as `feed` says.
fn redact(patterns: Arc<Patterns>, text: &[u8], feed: &Feed) -> Vec<u8> {
    let longest = patterns.longest();
    let mut r = Redactor::new(patterns);
    let mut out = Vec::new();
    let mut rest = text;
    let mut i = 0;
    while !rest.is_empty() {
        let size = feed.sizes[i % feed.sizes.len()].clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(size);
        r.push(chunk, &mut out);
        assert!(r.held() < longest.max(1), "held {} of {longest}", r.held());
        if feed.flushes[i % feed.flushes.len()] {
            r.flush_safe(&mut out);
        }
        rest = tail;
        i += 1;
    }
    r.finish(&mut out);
    assert_eq!(r.held(), 0);
    out
}

/// Checks every input (text and feed) against the reference, with one
/// compiled set of patterns for the case's secrets.
fn check(secrets: &[Vec<u8>], inputs: &[(Vec<Piece>, Feed)]) -> Result<(), TestCaseError> {
    let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
    let patterns = Arc::new(Patterns::new(&refs).expect("valid secrets"));
    let forms = all_patterns(secrets);
    let all_forms: Vec<Vec<Vec<u8>>> = secrets
        .iter()
        .map(|s| variants(s).iter().map(|v| v.bytes().to_vec()).collect())
        .collect();
    for (pieces, feed) in inputs {
        let text = build_text(&all_forms, pieces);
        let want = reference(&forms, &text);
        let got = redact(patterns.clone(), &text, feed);
        prop_assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "text {:?}",
            String::from_utf8_lossy(&text)
        );
        for form in &forms {
            prop_assert!(!contains(&got, form), "a form survived");
        }
    }
    Ok(())
}

/// Secrets over `alphabet` (which must not contain `*`), 6 to 40 bytes,
/// some sharing a prefix with the one before.
fn secrets(
    alphabet: &'static [u8],
    count: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let byte = proptest::sample::select(alphabet);
    let one = (
        proptest::collection::vec(byte, 6..=40),
        0usize..40,
        any::<bool>(),
    );
    proptest::collection::vec(one, count).prop_map(|raw| {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for (mut bytes, share, shares) in raw {
            if let (true, Some(prev)) = (shares, out.last()) {
                let n = share.min(prev.len()).min(bytes.len());
                bytes[..n].copy_from_slice(&prev[..n]);
            }
            out.push(bytes);
        }
        out
    })
}

fn pieces(noise: &'static [u8], len: usize) -> impl Strategy<Value = Vec<Piece>> {
    let byte = proptest::sample::select(noise);
    let piece = prop_oneof![
        2 => proptest::collection::vec(byte, 0..12).prop_map(Piece::Noise),
        3 => (any::<usize>(), any::<usize>(), proptest::option::weighted(0.3, (any::<usize>(), any::<bool>())))
            .prop_map(|(secret, form, keep)| Piece::Form { secret, form, keep }),
    ];
    proptest::collection::vec(piece, 0..len)
}

fn feed(max: usize) -> impl Strategy<Value = Feed> {
    let size = prop_oneof![3 => Just(1usize), 5 => 1..max];
    (
        proptest::collection::vec(size, 1..8),
        proptest::collection::vec(any::<bool>(), 1..4),
    )
        .prop_map(|(sizes, flushes)| Feed { sizes, flushes })
}

/// Inputs per case: building the automaton is the costly part of a case
/// in a debug build, so each case checks several texts and feeds against
/// one set of secrets.
const INPUTS_PER_CASE: usize = 20;

fn inputs(
    noise: &'static [u8],
    pieces_len: usize,
    max_chunk: usize,
) -> impl Strategy<Value = Vec<(Vec<Piece>, Feed)>> {
    proptest::collection::vec(
        (pieces(noise, pieces_len), feed(max_chunk)),
        INPUTS_PER_CASE,
    )
}

fn config(cases: u32) -> Config {
    let scale = std::env::var("REDACT_PROPTEST_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    Config {
        cases: cases.saturating_mul(scale),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        source_file: Some(file!()),
        // The default (ChaCha) costs more than the property in a debug build.
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    }
}

/// Printable text with the characters that encodings produce.
const TEXT: &[u8] = b"abcAB01=/+-_%\\\"' \n\r\t{}";
/// Few letters: secrets overlap, share prefixes, and occur by chance.
const TINY: &[u8] = b"ab";
/// Any byte but `*` (the mask): binary secrets, control bytes, UTF-8.
const BINARY: &[u8] = &{
    let mut all = [0u8; 255];
    let mut i = 0;
    let mut b = 0u8;
    while i < 255 {
        if b != b'*' {
            all[i] = b;
            i += 1;
        }
        b = b.wrapping_add(1);
    }
    all
};

/// Runs `cases` cases of a property, each with [`INPUTS_PER_CASE`]
/// inputs, and checks that they all ran.
fn property(
    name: &str,
    cases: u32,
    strategy: impl Strategy<Value = (Vec<Vec<u8>>, Vec<(Vec<Piece>, Feed)>)>,
) {
    let config = config(cases);
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let ran = Cell::new(0usize);
    let result = runner.run(&strategy, |(secrets, inputs)| {
        check(&secrets, &inputs)?;
        ran.set(ran.get() + inputs.len());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let ran = ran.get();
    eprintln!("{name}: {cases} cases, {ran} inputs checked against the reference");
    assert!(ran >= usize::try_from(cases).expect("u32 fits in usize") * INPUTS_PER_CASE);
}

// 2,000 + 2,000 + 1,000 cases of 20 inputs: 100,000 inputs, each a text
// and a chunking (with idle flushes) checked against the reference.

/// Printable secrets and text, random chunks, idle flushes.
#[test]
fn printable() {
    property(
        "printable",
        2_000,
        (secrets(TEXT, 1..=4), inputs(TEXT, 10, 64)),
    );
}

/// Secrets over two letters: overlaps, prefixes, adjacency everywhere.
#[test]
fn overlapping() {
    property(
        "overlapping",
        2_000,
        (secrets(TINY, 1..=4), inputs(TINY, 8, 16)),
    );
}

/// Arbitrary bytes: binary secrets, control bytes, UTF-8.
#[test]
fn binary() {
    property(
        "binary",
        1_000,
        (secrets(BINARY, 1..=3), inputs(BINARY, 8, 32)),
    );
}
