//! Errors of the crate's public API.

/// Why an allowlist cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An egress pattern is not `host:port`, `*.domain:port`, an IPv4
    /// literal `1.2.3.4:port` or an IPv6 literal `[::1]:port` (port 1-65535
    /// or `*`).
    #[error("invalid egress pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}
