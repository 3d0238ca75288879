//! Scopes: which pipeline jobs may lease a secret.
//!
//! A scope is a pattern over `PIPELINE/JOB`: exactly one `/`, and on each
//! side a glob of pipeline-name / job-id characters (`a-z`, `0-9`, `_`, `-`)
//! in which `*` matches any run of characters, the empty run included, but
//! never a `/`. So `demo/*` is every job of pipeline `demo`, `*/deploy` the
//! `deploy` job of every pipeline, `*/*` everything, and `demo/build` one
//! job. A lone `*` is refused rather than guessed at: it would read as
//! "everything" but could never match `PIPELINE/JOB`, which has a `/`.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// The longest side (pipeline or job pattern) of a scope, in bytes.
const MAX_SIDE_LEN: usize = 128;

/// A scope pattern that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {pattern:?}: {reason}")]
pub struct ScopeError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// One scope pattern, `PIPELINE/JOB` with `*` globs on either side.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pattern: String,
    slash: usize,
}

impl Scope {
    /// Parses a pattern such as `demo/*`.
    pub fn parse(pattern: &str) -> Result<Scope, ScopeError> {
        let err = |reason| ScopeError {
            pattern: pattern.to_owned(),
            reason,
        };
        if pattern.is_empty() {
            return Err(err(
                "a scope is PIPELINE/JOB, e.g. \"demo/build\" or \"demo/*\"",
            ));
        }
        if pattern.trim_matches('*').is_empty() {
            return Err(err(
                "a scope is PIPELINE/JOB and * never crosses the /; use \"*/*\" for every job of every pipeline",
            ));
        }
        let Some(slash) = pattern.find('/') else {
            return Err(err(
                "a scope is PIPELINE/JOB; use \"NAME/*\" for every job of a pipeline or \"*/NAME\" for a job of every pipeline",
            ));
        };
        if pattern[slash + 1..].contains('/') {
            return Err(err("a scope has exactly one /, between PIPELINE and JOB"));
        }
        for side in [&pattern[..slash], &pattern[slash + 1..]] {
            if side.is_empty() {
                return Err(err(
                    "the pipeline and the job pattern must not be empty (use * for any)",
                ));
            }
            if side.len() > MAX_SIDE_LEN {
                return Err(err("a side is longer than 128 characters"));
            }
            if side.contains("**") {
                return Err(err("** is not supported: a single * already matches any run of characters, and nothing matches across the /"));
            }
            if side.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(err("pipeline names and job ids are lowercase"));
            }
            let allowed = |b: u8| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*')
            };
            if !side.bytes().all(allowed) {
                return Err(err("a pattern may hold only a-z, 0-9, _, - and *"));
            }
        }
        Ok(Scope {
            pattern: pattern.to_owned(),
            slash,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether job `job` of pipeline `pipeline` is in this scope.
    pub fn allows(&self, pipeline: &str, job: &str) -> bool {
        glob_match(&self.pattern[..self.slash], pipeline)
            && glob_match(&self.pattern[self.slash + 1..], job)
    }
}

/// Whether any of `scopes` allows `pipeline/job`.
pub fn any_allows(scopes: &[Scope], pipeline: &str, job: &str) -> bool {
    scopes.iter().any(|s| s.allows(pipeline, job))
}

/// Matches `text` against `pattern`, in which `*` matches any run of
/// characters other than `/` and every other byte matches itself. Linear
/// backtracking to the last `*`, as in the classic wildcard matcher:
/// O(pattern × text) at worst, and both are at most a few hundred bytes.
fn glob_match(pattern: &str, text: &str) -> bool {
    if text.contains('/') {
        return false;
    }
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently ends at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_pi, star_ti)) = star {
            // Let the last `*` swallow one more byte and retry after it.
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Scope, ScopeError> {
        Scope::parse(s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({:?})", self.pattern)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.pattern)
    }
}

/// Formats scopes for messages: `"demo/*", "*/deploy"`.
pub(crate) fn display_list(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| format!("{:?}", s.pattern))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(glob_match("a*c", "abcbc"));
        assert!(!glob_match("a*c", "abcb"));
        assert!(!glob_match("*", "a/b"));
        assert!(glob_match("*-prod", "deploy-prod"));
        assert!(!glob_match("abc", "ab"));
        assert!(!glob_match("ab", "abc"));
    }
}
