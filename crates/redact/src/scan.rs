//! Finds every occurrence of every pattern in a stream of chunks.
//!
//! The filter picks the places where an occurrence may start; the automaton
//! reads the bytes from there until it is back in its start state (no
//! pattern begun). Between such places, the automaton is not run at all.
//! Each occurrence is reported once, by its end, in the order of the ends.
//!
//! Correctness rests on two facts (see `filter.rs` for the first):
//! - an occurrence starting at `s` is caught by the filter at the checked
//!   position in `s..s + step`; so when the automaton is idle at `i` and the
//!   next hit is `p`, no occurrence starts in `i..p + 1 - step`, and the
//!   automaton can start fresh at `max(i, p + 1 - step)`;
//! - when the automaton, started fresh at `j`, is back in its start state at
//!   `i`, no occurrence starting in `j..i` is unfinished.
//!
//! A window that does not fit in the chunk is checked with the next chunk:
//! the bytes from the first place an occurrence may start are carried over
//! (fewer than the shortest pattern, so none is complete in them).

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::Anchored;
use zeroize::Zeroize;

use crate::patterns::Matcher;

/// Bytes carried to the next chunk: fewer than the filter's prefix length,
/// which is at most 32 bytes (`MAX_PREFIX` in `filter.rs`).
const CARRY: usize = 32;

/// Where the scan of a stream stands.
pub(crate) struct Scanner {
    /// Automaton state after the bytes before `at`.
    sid: StateID,
    /// Absolute position up to which the scan is done.
    at: u64,
    /// Bytes `at..at + carry_len` not scanned yet (the automaton is in its
    /// start state at `at` when there are any).
    carry: [u8; CARRY],
    carry_len: usize,
}

impl Scanner {
    /// A scanner at absolute position `at`, where no pattern has begun.
    pub(crate) fn new(matcher: Option<&Matcher>, at: u64) -> Scanner {
        Scanner {
            sid: matcher.map_or(StateID::ZERO, |m| m.start),
            at,
            carry: [0; CARRY],
            carry_len: 0,
        }
    }

    /// Scans `chunk`, which follows the bytes scanned so far, and calls
    /// `found(start, end)` (absolute positions) for every occurrence of a
    /// pattern that ends in it, with the longest pattern ending there.
    pub(crate) fn scan(
        &mut self,
        matcher: Option<&Matcher>,
        chunk: &[u8],
        found: &mut impl FnMut(u64, u64),
    ) {
        let Some(m) = matcher else {
            self.at += len64(chunk.len());
            return;
        };
        if self.carry_len > 0 {
            let carry = self.carry;
            let n = std::mem::take(&mut self.carry_len);
            self.carry.zeroize();
            self.run(m, &carry[..n], 0, n, found);
            self.at += len64(n);
        }
        let base = self.at;
        let step = m.filter.step();
        let n = chunk.len();
        let mut r = 0;
        while r < n {
            if self.sid != m.start {
                r = self.run(m, chunk, r, r, found);
                continue;
            }
            // The automaton is idle at `r`: ask the filter, from the first
            // checked position (a multiple of `step` in absolute terms).
            let first = r + (step - rem(base + len64(r), step)) % step;
            match m.filter.find(chunk, first) {
                Ok(p) => {
                    let from = r.max((p + 1).saturating_sub(step));
                    r = self.run(m, chunk, from, p + 1, found);
                }
                Err(p) => {
                    let from = r.max((p + 1).saturating_sub(step)).min(n);
                    let rest = &chunk[from..];
                    self.carry[..rest.len()].copy_from_slice(rest);
                    self.carry_len = rest.len();
                    self.at = base + len64(from);
                    return;
                }
            }
        }
        self.at = base + len64(n);
    }

    /// Length of the longest suffix of the stream so far that is a prefix
    /// of some pattern (possibly a whole pattern): the bytes that could
    /// still begin an occurrence, and perhaps a whole occurrence that
    /// cannot grow. Everything before them can be released.
    ///
    /// This is exact, although the automaton does not read every byte: a
    /// prefix that was skipped had its window checked by the filter (and
    /// would have started the automaton), unless the window did not fit,
    /// in which case the prefix lies in the carried bytes, read here.
    pub(crate) fn depth(&self, matcher: Option<&Matcher>) -> usize {
        match matcher {
            None => 0,
            Some(m) if self.carry_len > 0 => {
                m.depth(m.state_after(&[&self.carry[..self.carry_len]]))
            }
            Some(m) => m.depth(self.sid),
        }
    }

    /// Scans the carried bytes: the stream has ended (or is taken as ended),
    /// so they are not waited on any longer.
    pub(crate) fn finish(&mut self, matcher: Option<&Matcher>, found: &mut impl FnMut(u64, u64)) {
        if let Some(m) = matcher {
            let carry = self.carry;
            let n = std::mem::take(&mut self.carry_len);
            self.carry.zeroize();
            self.run(m, &carry[..n], 0, n, found);
            self.at += len64(n);
        }
    }

    /// Runs the automaton over `hay[from..]`, at least to `until`, then
    /// until it is back in its start state; `self.at` is the absolute
    /// position of `hay[0]`. Returns where it stopped.
    #[inline]
    fn run(
        &mut self,
        m: &Matcher,
        hay: &[u8],
        from: usize,
        until: usize,
        found: &mut impl FnMut(u64, u64),
    ) -> usize {
        let nfa = &m.nfa;
        let start = m.start;
        let mut sid = self.sid;
        let mut i = from;
        while let Some(&b) = hay.get(i) {
            sid = nfa.next_state(Anchored::No, sid, b);
            i += 1;
            if nfa.is_special(sid) && nfa.is_match(sid) {
                let end = self.at + len64(i);
                found(end - len64(m.longest_match(sid)), end);
            }
            if sid == start && i >= until {
                break;
            }
        }
        self.sid = sid;
        i
    }
}

impl Drop for Scanner {
    fn drop(&mut self) {
        self.carry.zeroize();
    }
}

/// A length as a stream offset.
#[inline]
pub(crate) fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `x % step` as an index.
#[inline]
fn rem(x: u64, step: usize) -> usize {
    // The remainder is below `step`, which is a usize.
    usize::try_from(x % len64(step)).unwrap_or(0)
}
