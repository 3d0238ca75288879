//! The compiled set of patterns: every form of every secret, in one
//! Aho-Corasick automaton, with the filter that lets the scanner skip text.

use std::collections::HashSet;
use std::fmt;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{Anchored, MatchKind};

use crate::filter::Filter;
use crate::secret::Secret;
use crate::variants::variants;
use crate::RedactError;

/// An immutable, compiled set of secrets to mask, in every form listed in
/// the [crate documentation](crate).
///
/// Build it once per job and share it (behind an `Arc`) between the
/// redactors of the job's streams. [`Patterns::with`] makes a new set with
/// more secrets, for values a job registers while it runs.
pub struct Patterns {
    secrets: Vec<Secret>,
    matcher: Option<Matcher>,
}

/// The automaton and what the scanner needs around it.
pub(crate) struct Matcher {
    /// Standard (overlapping) semantics: every state lists every pattern
    /// that ends there, so the union of all occurrences can be masked.
    pub(crate) nfa: NFA,
    pub(crate) filter: Filter,
    /// The unanchored start state: the state after text in which no
    /// pattern has begun.
    pub(crate) start: StateID,
    /// Depth (length of the pattern prefix it stands for) of every state,
    /// sorted by state.
    depths: Vec<(u32, u32)>,
    pub(crate) longest: usize,
    patterns: usize,
}

impl Matcher {
    fn build(patterns: &[&[u8]]) -> Result<Matcher, RedactError> {
        let nfa = NFA::builder()
            .match_kind(MatchKind::Standard)
            .prefilter(false)
            .byte_classes(true)
            .dense_depth(2)
            .build(patterns)
            .map_err(|source| RedactError::Automaton {
                patterns: patterns.len(),
                source,
            })?;
        let start = nfa
            .start_state(Anchored::No)
            .expect("an NFA supports unanchored searches");
        let anchored = nfa
            .start_state(Anchored::Yes)
            .expect("an NFA supports anchored searches");
        // Every non-start state is the end of a path from the start state
        // spelling a pattern prefix; its depth is that prefix's length. The
        // anchored and unanchored start states share these states.
        let mut depths = Vec::with_capacity(patterns.iter().map(|p| p.len()).sum());
        for pattern in patterns {
            let mut sid = anchored;
            for (i, &b) in pattern.iter().enumerate() {
                sid = nfa.next_state(Anchored::Yes, sid, b);
                depths.push((sid.as_u32(), u32::try_from(i + 1).unwrap_or(u32::MAX)));
            }
        }
        depths.sort_unstable();
        depths.dedup();
        let shortest = patterns.iter().map(|p| p.len()).min().unwrap_or(0);
        let filter = Filter::new(patterns.iter().copied(), shortest);
        Ok(Matcher {
            longest: nfa.max_pattern_len(),
            patterns: patterns.len(),
            nfa,
            filter,
            start,
            depths,
        })
    }

    /// Length of the longest suffix of the text read so far that is a
    /// prefix of some pattern, given the unanchored state after reading it.
    pub(crate) fn depth(&self, sid: StateID) -> usize {
        if sid == self.start {
            return 0;
        }
        let key = sid.as_u32();
        match self.depths.binary_search_by_key(&key, |&(s, _)| s) {
            Ok(i) => usize::try_from(self.depths[i].1).unwrap_or(usize::MAX),
            // Not reachable for states of this automaton; the longest
            // pattern is a safe upper bound.
            Err(_) => self.longest,
        }
    }

    /// The unanchored state after reading `parts` one after the other from
    /// the start state.
    pub(crate) fn state_after(&self, parts: &[&[u8]]) -> StateID {
        let mut sid = self.start;
        for part in parts {
            for &b in *part {
                sid = self.nfa.next_state(Anchored::No, sid, b);
            }
        }
        sid
    }

    /// Length of the longest pattern that ends in state `sid` (0 if none).
    #[inline]
    pub(crate) fn longest_match(&self, sid: StateID) -> usize {
        (0..self.nfa.match_len(sid))
            .map(|i| self.nfa.pattern_len(self.nfa.match_pattern(sid, i)))
            .max()
            .unwrap_or(0)
    }
}

impl Patterns {
    /// Compiles every form of every secret in `secrets`.
    ///
    /// Fails if a secret is shorter than [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN)
    /// or longer than [`MAX_SECRET_LEN`](crate::MAX_SECRET_LEN) (the error
    /// does not contain the value), or if the automaton would be too large.
    pub fn new(secrets: &[&[u8]]) -> Result<Patterns, RedactError> {
        let secrets = secrets
            .iter()
            .map(|s| Secret::new(s))
            .collect::<Result<Vec<_>, _>>()?;
        Patterns::from_secrets(secrets)
    }

    /// Compiles every form of every secret in `secrets`.
    pub fn from_secrets(secrets: Vec<Secret>) -> Result<Patterns, RedactError> {
        let mut unique: Vec<Secret> = Vec::with_capacity(secrets.len());
        for secret in secrets {
            if !unique.contains(&secret) {
                unique.push(secret);
            }
        }
        let variants: Vec<_> = unique.iter().flat_map(|s| variants(s.expose())).collect();
        let mut seen = HashSet::with_capacity(variants.len());
        let patterns: Vec<&[u8]> = variants
            .iter()
            .map(|v| v.bytes())
            .filter(|b| seen.insert(*b))
            .collect();
        let matcher = if patterns.is_empty() {
            None
        } else {
            Some(Matcher::build(&patterns)?)
        };
        Ok(Patterns {
            secrets: unique,
            matcher,
        })
    }

    /// A set that masks nothing.
    pub fn empty() -> Patterns {
        Patterns {
            secrets: Vec::new(),
            matcher: None,
        }
    }

    /// A new set with the secrets of this one and `more`.
    pub fn with(&self, more: &[&[u8]]) -> Result<Patterns, RedactError> {
        let mut secrets = self.secrets.clone();
        for value in more {
            secrets.push(Secret::new(value)?);
        }
        Patterns::from_secrets(secrets)
    }

    /// Length in bytes of the longest pattern (0 for an empty set). A
    /// redactor never holds back more than one byte less than this.
    pub fn longest(&self) -> usize {
        self.matcher.as_ref().map_or(0, |m| m.longest)
    }

    /// How many distinct patterns (forms of secrets) the set holds.
    pub fn len(&self) -> usize {
        self.matcher.as_ref().map_or(0, |m| m.patterns)
    }

    /// True if the set masks nothing.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// How many distinct secrets the set was built from.
    pub fn secrets(&self) -> usize {
        self.secrets.len()
    }

    /// Approximate heap memory used by the compiled set, in bytes.
    pub fn memory_usage(&self) -> usize {
        let secrets: usize = self.secrets.iter().map(Secret::len).sum();
        secrets
            + self.matcher.as_ref().map_or(0, |m| {
                m.nfa.memory_usage() + m.filter.memory_usage() + m.depths.len() * 8
            })
    }

    pub(crate) fn matcher(&self) -> Option<&Matcher> {
        self.matcher.as_ref()
    }
}

impl Default for Patterns {
    fn default() -> Patterns {
        Patterns::empty()
    }
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Patterns")
            .field("secrets", &self.secrets.len())
            .field("patterns", &self.len())
            .field("longest", &self.longest())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_the_longest_pending_prefix() {
        let p = Patterns::new(&[b"abcdefgh", b"cdefxyzw"]).unwrap();
        let m = p.matcher().unwrap();
        let naive = |text: &[u8]| -> usize {
            let pats: Vec<Vec<u8>> = crate::variants(b"abcdefgh")
                .into_iter()
                .chain(crate::variants(b"cdefxyzw"))
                .map(|v| v.bytes().to_vec())
                .collect();
            (0..=text.len())
                .find(|&k| pats.iter().any(|pat| pat.starts_with(&text[k..])))
                .map_or(0, |k| text.len() - k)
        };
        for text in [
            &b""[..],
            b"zz",
            b"zzab",
            b"abcdef",
            b"zabcdefg",
            b"xcdefx",
            b"abcdefghcdef",
            b"YWJj",
        ] {
            assert_eq!(m.depth(m.state_after(&[text])), naive(text), "{text:?}");
        }
    }

    #[test]
    fn dedupes_secrets_and_patterns() {
        let p = Patterns::new(&[b"abcdefgh", b"abcdefgh"]).unwrap();
        assert_eq!(p.secrets(), 1);
        let q = Patterns::new(&[b"abcdefgh"]).unwrap();
        assert_eq!(p.len(), q.len());
        assert_eq!(p.longest(), 16); // hex
        assert!(format!("{p:?}").starts_with("Patterns { secrets: 1"));
    }

    #[test]
    fn empty_set() {
        let p = Patterns::new(&[]).unwrap();
        assert!(p.is_empty());
        assert_eq!((p.len(), p.longest(), p.secrets()), (0, 0, 0));
        let q = p.with(&[b"abcdefgh"]).unwrap();
        assert!(!q.is_empty());
        assert_eq!(q.secrets(), 1);
    }

    #[test]
    fn refuses_short_secrets() {
        let err = Patterns::new(&[b"abcdefgh", b"abc"]).unwrap_err();
        assert!(matches!(err, RedactError::TooShort { len: 3 }));
        let p = Patterns::new(&[b"abcdefgh"]).unwrap();
        assert!(p.with(&[b"12345"]).is_err());
    }
}
