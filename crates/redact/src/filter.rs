//! A q-gram filter that tells the scanner where no pattern can start, so
//! that the automaton runs only near likely matches.
//!
//! Every pattern is at least `m` bytes long. The filter hashes windows of
//! `q` bytes into a bitmap (a blocked Bloom filter: up to six bits in one
//! 64-bit word per window, all from one folded multiply): for each
//! pattern, the windows starting at its offsets `0..step`, where
//! `step = m - q + 1` (`m` capped at 32). The scanner checks the
//! text's windows only at positions that are multiples of `step`: any
//! occurrence of a pattern, starting at `s`, covers a checked position `p`
//! in `s..s + step`, and its window there is one of the pattern's windows,
//! so its bits are set. A clear bit at `p` therefore rules out every
//! occurrence starting in `p + 1 - step ..= p`. Set bits are only a maybe:
//! the automaton then decides.
//!
//! Cost: a check is about 17 instructions without a branch (an unaligned
//! load, one 64x64->128 multiply, the bitmap's word, two small tables for
//! the bits); four checks share one branch. On build-log text a check
//! takes about 1.4 ns (2026-11-28; 1.7-2 ns when each bit's position was
//! computed with shifts, and 3.5-4.2 ns with two multiplies and
//! bounds-checked loads). A hit costs the automaton about half a
//! microsecond, so the bits are chosen for few hits: about 0.01-0.03% of
//! the checks on build-log text, with 10, 60 or 1,000 secrets (three bits
//! from shifts: 0.02-0.08%).

/// Longest pattern prefix the filter looks at: a longer prefix means fewer
/// positions checked (one every `prefix - q + 1` bytes) but more windows
/// per pattern in the bitmap. Real tokens are 20 to 60 bytes, and their
/// shortest forms (the base64 of an unaligned value) rarely under 30: at
/// 32, such secrets are checked every 25 bytes instead of every 9, which
/// took the redaction overhead of a job writing 1 GiB from about +20% to
/// +2 to 7% (BENCHMARKS.md).
const MAX_PREFIX: usize = 32;

/// Smallest and largest bitmap, in bits.
const MIN_BITS: usize = 1 << 12;
const MAX_BITS: usize = 1 << 24;

/// Bitmap bits per window (rounded up to a power of two), with 5-6 bits set
/// per window: few false hits (the figures in the module's comment), in a
/// bitmap small enough to stay in the cache between the chunks of a chatty
/// job. At 32 the hits were fewer still (2, 1 and 10 in the test's 41,945
/// checks, against 6, 5 and 12), but the bitmap twice as large: 128 KiB
/// for 60 secrets, which the output thread's other work (lines, the log
/// file's writes) pushes out of the core's cache between chunks. At 8,
/// 28-111 hits.
const BITS_PER_WINDOW: usize = 16;

/// The hash's multiplier (2^64 / golden ratio, odd).
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// Hashed windows of every pattern's first bytes.
pub(crate) struct Filter {
    /// Window length in bytes, 4 to 8.
    q: usize,
    /// Distance between checked positions, at least 1.
    step: usize,
    /// Keeps the low `q` bytes of a little-endian 8-byte load.
    mask: u64,
    /// `bits.len() - 1`: `bits.len()` is a power of two.
    words: u64,
    bits: Vec<u64>,
}

impl Filter {
    /// A filter for `patterns`, all non-empty and at least `shortest` bytes
    /// long (`shortest >= 4`).
    pub(crate) fn new<'a>(
        patterns: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
        shortest: usize,
    ) -> Filter {
        let prefix = shortest.min(MAX_PREFIX);
        let q = (prefix / 2).clamp(4, 8).min(prefix);
        let step = prefix - q + 1;
        let windows = patterns.len().saturating_mul(step);
        let nbits = windows
            .saturating_mul(BITS_PER_WINDOW)
            .next_power_of_two()
            .clamp(MIN_BITS, MAX_BITS);
        let mask = if q >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * q)) - 1
        };
        let words = nbits / 64;
        let mut filter = Filter {
            q,
            step,
            mask,
            words: u64::try_from(words - 1).unwrap_or(0),
            bits: vec![0; words],
        };
        debug_assert!(words.is_power_of_two());
        for pattern in patterns {
            for offset in 0..step {
                if let Some(window) = pattern.get(offset..offset + q) {
                    let (word, mask) = filter.hash(load_partial(window));
                    filter.bits[word] |= mask;
                }
            }
        }
        filter
    }

    /// Distance between checked positions.
    pub(crate) fn step(&self) -> usize {
        self.step
    }

    /// Window length.
    #[cfg(test)]
    pub(crate) fn q(&self) -> usize {
        self.q
    }

    /// Bitmap size, in bytes.
    pub(crate) fn memory_usage(&self) -> usize {
        self.bits.len() * 8
    }

    /// The word of the bitmap for a window, and the bits to test in it.
    /// Agrees with [`Filter::test`].
    #[inline]
    fn hash(&self, window: u64) -> (usize, u64) {
        let x = fold(window & self.mask);
        (index(x & self.words), bits_of(x))
    }

    /// Whether the bits of `window` are set, the slow way (for a window
    /// that may be shorter than 8 bytes).
    #[inline]
    fn maybe(&self, window: u64) -> bool {
        let (word, mask) = self.hash(window);
        self.bits.get(word).is_some_and(|w| w & mask == mask)
    }

    /// 1 if the bits of the window at `hay[at..at + 8]` are all set, else
    /// 0: [`Filter::maybe`] without a branch.
    ///
    /// # Safety
    ///
    /// `at + 8 <= hay.len()`.
    #[inline(always)]
    unsafe fn test(&self, hay: &[u8], at: usize) -> u32 {
        // SAFETY: the caller ensures that the 8 bytes at `at` are in `hay`;
        // the read has no alignment requirement.
        let window = unsafe { hay.as_ptr().add(at).cast::<u64>().read_unaligned() };
        let x = fold(u64::from_le(window) & self.mask);
        // SAFETY: `x & self.words` is at most `self.words`, which is
        // `self.bits.len() - 1` (set in `new`, never changed).
        let word = unsafe { *self.bits.get_unchecked(index(x & self.words)) };
        let bits = bits_of(x);
        u32::from(word & bits == bits)
    }

    /// Checks the windows of `hay` at `p`, `p + step`, ... Returns `Ok(p)`
    /// for the first whose bits are set, or `Err(p)` with the first checked
    /// position whose window does not fit in `hay`.
    #[inline]
    pub(crate) fn find(&self, hay: &[u8], mut p: usize) -> Result<usize, usize> {
        let step = self.step;
        // Four checks at a time, with one branch: their loads do not depend
        // on each other. The last one reads `p + 3 * step .. + 8`.
        // (`step` is below `MAX_PREFIX`: no overflow.)
        if let Some(last) = hay.len().checked_sub(3 * step + 8) {
            while p <= last {
                // SAFETY: `p + 3 * step + 8 <= hay.len()`, so every window
                // read (8 bytes at `p + k * step`, `k <= 3`) is in `hay`.
                let hits = unsafe {
                    self.test(hay, p)
                        | self.test(hay, p + step) << 1
                        | self.test(hay, p + 2 * step) << 2
                        | self.test(hay, p + 3 * step) << 3
                };
                if hits != 0 {
                    let k = usize::try_from(hits.trailing_zeros()).unwrap_or(0);
                    return Ok(p + k * step);
                }
                p += 4 * step;
            }
        }
        while let Some(window) = hay.get(p..).filter(|rest| rest.len() >= self.q) {
            if self.maybe(load_partial(window)) {
                return Ok(p);
            }
            p += step;
        }
        Err(p)
    }
}

/// The bits a window sets (or tests) in its word of the bitmap: the union
/// of two masks of [`BITS_PER_MASK`] bits, one picked by each of the top two
/// bytes of its hash (the word is picked by the low bits). Two table loads
/// and an `or`, instead of a shift and a test per bit, with 16 bits of the
/// hash behind the choice of bits (see [`BITS_PER_WINDOW`]).
#[inline(always)]
fn bits_of(x: u64) -> u64 {
    HIGH[index(x >> 56)] | LOW[index(x >> 48 & 0xff)]
}

/// Bits set in each mask of [`HIGH`] and [`LOW`].
const BITS_PER_MASK: u32 = 3;

/// The masks [`bits_of`] picks from, by the hash's top byte and by the one
/// below it.
static HIGH: [u64; 256] = masks(0x2026_1128);
static LOW: [u64; 256] = masks(0x1234_5678);

/// 256 words of [`BITS_PER_MASK`] bits each, at positions from a fixed
/// sequence (splitmix64 from `seed`): every build has the same table.
const fn masks(seed: u64) -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut state = seed;
    let mut i = 0;
    while i < table.len() {
        let mut mask = 0u64;
        while mask.count_ones() < BITS_PER_MASK {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            mask |= 1 << (z >> 58);
        }
        table[i] = mask;
        i += 1;
    }
    table
}

/// A folded multiply: the two halves of the 128-bit product of `w` and an
/// odd constant, xored, so that every bit of the result depends on every
/// bit of `w` (one `mul` instruction).
#[inline(always)]
fn fold(w: u64) -> u64 {
    let product = u128::from(w) * u128::from(MULTIPLIER);
    #[allow(clippy::cast_possible_truncation)] // The low half, on purpose.
    let low = product as u64;
    low ^ u64::try_from(product >> 64).unwrap_or(0)
}

/// A bitmap word's index (at most `MAX_BITS / 64`) as a `usize`.
#[inline(always)]
fn index(word: u64) -> usize {
    usize::try_from(word).unwrap_or(0)
}

/// The first (up to) 8 bytes of `bytes` as a little-endian integer.
#[inline]
fn load_partial(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_follow_the_shortest_pattern() {
        let p: Vec<&[u8]> = vec![b"abcdef"];
        let f = Filter::new(p.iter().copied(), 6);
        assert_eq!((f.q(), f.step()), (4, 3));
        let f = Filter::new(p.iter().copied(), 16);
        assert_eq!((f.q(), f.step()), (8, 9));
        let f = Filter::new(p.iter().copied(), 32);
        assert_eq!((f.q(), f.step()), (8, 25));
        let f = Filter::new(p.iter().copied(), 100);
        assert_eq!((f.q(), f.step()), (8, 25));
        let f = Filter::new(p.iter().copied(), 11);
        assert_eq!((f.q(), f.step()), (5, 7));
    }

    #[test]
    fn never_misses_an_occurrence() {
        let short: Vec<&[u8]> = vec![b"secret-value", b"0123456789ab", b"zzzzzzzzzzzzzzzzzzzz"];
        never_misses(&short, 12);
        // Long patterns: the widest step.
        let long: Vec<&[u8]> = vec![
            b"c2VjcmV0LXZhbHVlLXRoYXQtaXMtbG9uZy1lbm91Z2g",
            b"0123456789abcdef0123456789abcdef01234567",
        ];
        never_misses(&long, 40);
    }

    fn never_misses(patterns: &[&[u8]], shortest: usize) {
        let f = Filter::new(patterns.iter().copied(), shortest);
        for pattern in patterns {
            for lead in 0..40 {
                let mut hay = vec![b'.'; lead];
                hay.extend_from_slice(pattern);
                hay.extend_from_slice(b"...");
                // The first checked position at or after `lead + 1 - step`
                // must hit, at or before `lead + step - 1`.
                let start = (lead + 1).saturating_sub(f.step());
                let first = start.div_ceil(f.step()) * f.step();
                let hit = f.find(&hay, first).unwrap();
                assert!(hit < lead + f.step(), "lead {lead}: hit at {hit}");
            }
        }
    }

    #[test]
    fn the_fast_checks_agree_with_the_slow_ones() {
        // `find` checks four windows at a time with `test`, and the last
        // few with `maybe`: both must give the same answer everywhere.
        let patterns: Vec<&[u8]> = vec![
            b"secret-value-123",
            b"0123456789abcdef",
            b"QUJDREVGR0hJSktMTU5P",
        ];
        let text = b"0123456789abcdef secret-value-123 QUJDREVGR0hJ";
        let hay: Vec<u8> = (0..4000).map(|i| text[i * 7 % text.len()]).collect();
        for shortest in [6, 11, 16] {
            let f = Filter::new(patterns.iter().copied(), shortest);
            for start in 0..f.step() {
                let mut p = start;
                loop {
                    let expected = (p..)
                        .step_by(f.step())
                        .take_while(|&at| at + f.q() <= hay.len())
                        .find(|&at| f.maybe(load_partial(&hay[at..])));
                    match f.find(&hay, p) {
                        Ok(at) => {
                            assert_eq!(Some(at), expected, "shortest {shortest}, from {p}");
                            p = at + f.step();
                        }
                        Err(end) => {
                            assert_eq!(expected, None, "shortest {shortest}, from {p}");
                            assert!(end + f.q() > hay.len() && end < hay.len() + f.step());
                            break;
                        }
                    }
                }
            }
        }
    }

    /// A build log's worth of text (the kinds of line of
    /// `benches/output.sh`: timestamps, compiler lines, paths, hex hashes,
    /// numbers), from a fixed seed.
    fn build_log(bytes: usize, rng: &mut impl FnMut() -> u64) -> Vec<u8> {
        let words = [
            "buffer", "config", "handler", "parser", "cache", "stream", "token",
        ];
        let crates = [
            "serde", "tokio", "rustix", "memchr", "regex", "clap", "libc",
        ];
        let pick = |list: &[&'static str], r: u64| list[usize::try_from(r).unwrap() % list.len()];
        let mut log = String::new();
        while log.len() < bytes {
            let (a, b, c) = (rng(), rng(), rng());
            let stamp = format!("2026-11-28T07:{:02}:{:02}.{:03}Z", a % 60, b % 60, c % 1000);
            let line = match a % 5 {
                0 => format!(
                    "{stamp}    Compiling {} v0.{}.{}",
                    pick(&crates, b),
                    b % 40,
                    c % 20
                ),
                1 => format!(
                    "{stamp} cc -O2 -Wall -c src/{}_{}.c -o target/{:016x}.o",
                    pick(&words, b),
                    pick(&words, c),
                    rng()
                ),
                2 => format!(
                    "{stamp} fetch {} sha256:{:016x}{:016x}{:016x}{:016x}",
                    pick(&crates, b),
                    rng(),
                    rng(),
                    rng(),
                    rng()
                ),
                3 => format!(
                    "{stamp} test {}::{} ... ok ({}ms)",
                    pick(&words, b),
                    pick(&words, c),
                    c % 900
                ),
                _ => format!(
                    "{stamp} commit {:016x}{:016x}{:08x} [{}/400] building src/{}.rs",
                    rng(),
                    rng(),
                    c,
                    b % 400,
                    pick(&words, c)
                ),
            };
            log.push_str(&line);
            log.push('\n');
        }
        log.into_bytes()
    }

    #[test]
    fn a_build_log_almost_never_wakes_the_automaton() {
        // Each hit costs the automaton about half a microsecond, as much as
        // a few hundred checks: a hash whose bits depend on one another, or
        // too full a bitmap, shows here as many more hits. Three bits per
        // window from shifts gave 30, 9 and 35 hits in these 41,945
        // checks; two masks from tables give 6, 5 and 12.
        use base64::Engine as _;
        let mut state = 0x2026_1128_u64;
        let mut rng = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let log = build_log(1 << 20, &mut rng);
        for n in [10, 60, 1000] {
            let secrets: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let raw: Vec<u8> = (0..24 + rng() % 17)
                        .map(|_| rng().to_le_bytes()[0])
                        .collect();
                    base64::engine::general_purpose::STANDARD
                        .encode(raw)
                        .into_bytes()
                })
                .collect();
            let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
            let patterns = crate::Patterns::new(&refs).unwrap();
            let f = &patterns.matcher().unwrap().filter;
            let (checks, hits) = count(f, &log);
            assert!(checks > 40_000, "{n} secrets: {checks} checks");
            assert!(
                hits * 2_000 < checks,
                "{n} secrets: {hits} hits in {checks} checks"
            );
        }
    }

    /// How many windows `f` checks in `hay`, and how many of them hit.
    fn count(f: &Filter, hay: &[u8]) -> (usize, usize) {
        let (mut checks, mut hits, mut p) = (0, 0, 0);
        loop {
            match f.find(hay, p) {
                Ok(at) => {
                    hits += 1;
                    checks += (at - p) / f.step() + 1;
                    p = at + f.step();
                }
                Err(end) => {
                    checks += (end - p) / f.step();
                    return (checks, hits);
                }
            }
        }
    }

    #[test]
    fn unrelated_text_mostly_misses() {
        let patterns: Vec<&[u8]> = vec![b"secret-value", b"736563726574"];
        let f = Filter::new(patterns.iter().copied(), 12);
        let hay =
            b"   Compiling proc-macro2 v1.0.79\n   Compiling unicode-ident v1.0.12\n".repeat(10);
        let (checks, hits) = count(&f, &hay);
        assert!(checks > 80, "{checks}");
        assert!(hits * 10 < checks, "{hits} hits in {checks} checks");
    }
}
