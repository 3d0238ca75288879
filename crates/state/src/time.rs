//! Timestamps of the run record: the shared [`durable::Timestamp`]
//! (milliseconds since the Unix epoch, an INTEGER column, RFC 3339 UTC in
//! JSON and on screen).

pub use durable::Timestamp;
