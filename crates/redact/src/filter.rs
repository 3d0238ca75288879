//! A q-gram filter that tells the scanner where no pattern can start, so
//! that the automaton runs only near likely matches.
//!
//! Every pattern is at least `m` bytes long. The filter hashes windows of
//! `q` bytes into a bitmap (a blocked Bloom filter: two bits in one
//! 64-bit word per window): for each
//! pattern, the windows starting at its offsets `0..step`, where
//! `step = m - q + 1` (`m` capped at 32). The scanner checks the
//! text's windows only at positions that are multiples of `step`: any
//! occurrence of a pattern, starting at `s`, covers a checked position `p`
//! in `s..s + step`, and its window there is one of the pattern's windows,
//! so its bits are set. A clear bit at `p` therefore rules out every
//! occurrence starting in `p + 1 - step ..= p`. Set bits are only a maybe:
//! the automaton then decides.

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

/// Bitmap bits per window: with two hashes, about 1.4% of the windows of
/// unrelated text hit.
const BITS_PER_WINDOW: usize = 16;

/// Fibonacci hashing multiplier (2^64 / golden ratio, odd).
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
/// A second odd multiplier, for the second hash (from `splitmix64`).
const MULTIPLIER2: u64 = 0xBF58_476D_1CE4_E5B9;

/// Hashed windows of every pattern's first bytes.
pub(crate) struct Filter {
    /// Window length in bytes, 4 to 8.
    q: usize,
    /// Distance between checked positions, at least 1.
    step: usize,
    /// Keeps the low `q` bytes of a little-endian 8-byte load.
    mask: u64,
    /// `64 - log2(bitmap words)`.
    shift: u32,
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
        let mut filter = Filter {
            q,
            step,
            mask,
            shift: 64 - (nbits / 64).trailing_zeros(),
            bits: vec![0; nbits / 64],
        };
        for pattern in patterns {
            for offset in 0..step {
                if let Some(window) = pattern.get(offset..offset + q) {
                    let (word, mask) = filter.hash(load_partial(window));
                    if let Some(w) = filter.bits.get_mut(word) {
                        *w |= mask;
                    }
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

    /// The word of the bitmap for a window, and the two bits to test in it.
    #[inline(always)]
    fn hash(&self, window: u64) -> (usize, u64) {
        let w = window & self.mask;
        let word = w.wrapping_mul(MULTIPLIER) >> self.shift;
        let bits = w.wrapping_mul(MULTIPLIER2);
        let mask = 1u64 << (bits >> 58) | 1u64 << (bits >> 52 & 63);
        // `word` has at most 18 bits (`MAX_BITS` / 64 words).
        (usize::try_from(word).unwrap_or(0), mask)
    }

    #[inline(always)]
    fn maybe(&self, window: u64) -> bool {
        let (word, mask) = self.hash(window);
        self.bits.get(word).is_some_and(|w| w & mask == mask)
    }

    /// Checks the windows of `hay` at `p`, `p + step`, ... Returns `Ok(p)`
    /// for the first whose bit is set, or `Err(p)` with the first checked
    /// position whose window does not fit in `hay`.
    #[inline]
    pub(crate) fn find(&self, hay: &[u8], mut p: usize) -> Result<usize, usize> {
        let step = self.step;
        // Four loads at a time: they do not depend on each other.
        while let Some(end) = p.checked_add(3 * step + 8) {
            if end > hay.len() {
                break;
            }
            let w = |at: usize| -> u64 {
                hay.get(at..)
                    .and_then(<[u8]>::first_chunk::<8>)
                    .map_or(0, |b| u64::from_le_bytes(*b))
            };
            let (a, b, c, d) = (w(p), w(p + step), w(p + 2 * step), w(p + 3 * step));
            let (ha, hb, hc, hd) = (self.maybe(a), self.maybe(b), self.maybe(c), self.maybe(d));
            if ha | hb | hc | hd {
                return Ok(if ha {
                    p
                } else if hb {
                    p + step
                } else if hc {
                    p + 2 * step
                } else {
                    p + 3 * step
                });
            }
            p += 4 * step;
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
    fn unrelated_text_mostly_misses() {
        let patterns: Vec<&[u8]> = vec![b"secret-value", b"736563726574"];
        let f = Filter::new(patterns.iter().copied(), 12);
        let hay =
            b"   Compiling proc-macro2 v1.0.79\n   Compiling unicode-ident v1.0.12\n".repeat(10);
        let (mut checks, mut hits, mut p) = (0, 0, 0);
        loop {
            match f.find(&hay, p) {
                Ok(at) => {
                    hits += 1;
                    checks += (at - p) / f.step() + 1;
                    p = at + f.step();
                }
                Err(end) => {
                    checks += (end - p) / f.step();
                    break;
                }
            }
        }
        assert!(checks > 80, "{checks}");
        assert!(hits * 10 < checks, "{hits} hits in {checks} checks");
    }
}
