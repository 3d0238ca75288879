//! Wall-clock timestamps (`durable::time`): unix milliseconds in the
//! database, RFC 3339 UTC in JSON and on screen.

pub(crate) use durable::time::duration_millis;
pub use durable::Timestamp;
