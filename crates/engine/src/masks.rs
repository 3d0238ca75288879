//! What a job's output and records are masked with: its secrets, and the
//! values it registers while it runs (lines it writes to its mask
//! channel, [`sandbox::MASK_PATH`]).
//!
//! Two threads redact what a job produces: the step's output thread its
//! output, the monitor thread the job's words in its records (the arguments of an
//! exec, a host name it asked for). A job that registers a value and uses
//! it at once, `echo "$TOKEN" > /run/airlock/mask; curl -H
//! "Authorization: Bearer $TOKEN" ...`, must find it masked in both,
//! although nothing it prints comes between the two. So whichever thread
//! is about to redact reads the channel first, under one lock: whatever
//! the job wrote to the channel before it wrote the output, or before it
//! ran the program, is then in the patterns that redact it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redact::Patterns;
use sandbox::MaskChannel;

use crate::event::Event;

/// Most values a job may register for masking: each one rebuilds the
/// redaction automaton, and a job must not be able to make that unbounded.
pub const MAX_RUNTIME_MASKS: usize = 256;

/// Refusals reported one by one (a warning in the live output, an entry
/// in the audit log); the rest are counted in one more as the job ends,
/// so that a job writing a million short lines to its mask channel cannot
/// flood the audit log or the terminal.
pub const MAX_REFUSALS: usize = 16;

/// A job's redaction patterns, kept current with its mask channel.
pub(crate) struct Masks {
    job: String,
    inner: Mutex<Inner>,
}

struct Inner {
    /// `None` until the sandbox hands it over (and for tests).
    channel: Option<MaskChannel>,
    /// Secrets and registered values; `None` while there are neither.
    patterns: Option<Arc<Patterns>>,
    /// Changes whenever `patterns` does.
    generation: u64,
    /// Values registered and accepted so far.
    added: usize,
    /// Values refused so far.
    refused: usize,
    /// `MaskAdded` and `MaskRefused` not yet taken by the output thread.
    events: Vec<Event>,
}

/// The patterns in force, as the step's output thread takes them.
pub(crate) struct Current {
    pub(crate) generation: u64,
    pub(crate) patterns: Option<Arc<Patterns>>,
    /// What registering values since the last call gave.
    pub(crate) events: Vec<Event>,
}

impl Masks {
    /// The masks of job `job`, with the patterns of its secrets (if it has
    /// any) at generation 0.
    pub(crate) fn new(job: &str, secrets: Option<Arc<Patterns>>) -> Masks {
        Masks {
            job: job.to_string(),
            inner: Mutex::new(Inner {
                channel: None,
                patterns: secrets,
                generation: 0,
                added: 0,
                refused: 0,
                events: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads `channel` from now on.
    pub(crate) fn listen(&self, channel: MaskChannel) {
        self.lock().channel = Some(channel);
    }

    /// The patterns to redact the job's words with now: every value it
    /// registered so far is in them.
    pub(crate) fn current(&self) -> Option<Arc<Patterns>> {
        let mut inner = self.lock();
        inner.read(&self.job);
        inner.patterns.clone()
    }

    /// The event that counts the refusals not reported one by one, if
    /// there were any (as the job ends).
    pub(crate) fn unreported(&self) -> Option<Event> {
        let inner = self.lock();
        let more = inner.refused.checked_sub(MAX_REFUSALS).filter(|n| *n > 0)?;
        Some(Event::MaskRefused {
            job: self.job.clone(),
            reason: format!(
                "{more} more values to mask were refused (at most {MAX_REFUSALS} refusals are reported one by one)"
            ),
        })
    }

    /// [`Masks::current`], with its generation and the events of the
    /// values registered since the last call (for the step's output
    /// thread, which emits them in order with the output).
    pub(crate) fn take(&self) -> Current {
        let mut inner = self.lock();
        inner.read(&self.job);
        Current {
            generation: inner.generation,
            patterns: inner.patterns.clone(),
            events: std::mem::take(&mut inner.events),
        }
    }
}

impl Inner {
    /// Adds every value waiting in the channel.
    fn read(&mut self, job: &str) {
        let Some(mut channel) = self.channel.take() else {
            return;
        };
        channel.read(&mut |value| self.add(job, value));
        self.channel = Some(channel);
    }

    /// Adds one value the job registered. The value only ever travels
    /// through the mask channel and the patterns: a refusal names the
    /// reason, never the value.
    fn add(&mut self, job: &str, value: &[u8]) {
        if self.added >= MAX_RUNTIME_MASKS {
            return self.refuse(
                job,
                format!(
                    "the job already registered {MAX_RUNTIME_MASKS} values to mask, the most a job may"
                ),
            );
        }
        let patterns = match &self.patterns {
            Some(p) => p.with(&[value]),
            None => Patterns::new(&[value]),
        };
        match patterns {
            Ok(p) => {
                self.patterns = Some(Arc::new(p));
                self.generation += 1;
                self.added += 1;
                self.events.push(Event::MaskAdded {
                    job: job.into(),
                    count: self.added,
                });
            }
            Err(e) => self.refuse(job, e.to_string()),
        }
    }

    /// Counts a refusal, and reports it if it is among the first
    /// [`MAX_REFUSALS`].
    fn refuse(&mut self, job: &str, reason: String) {
        self.refused += 1;
        if self.refused <= MAX_REFUSALS {
            self.events.push(Event::MaskRefused {
                job: job.into(),
                reason,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_join_the_secrets_and_refusals_change_nothing() {
        let secrets = Arc::new(Patterns::new(&[b"secret-value-1"]).unwrap());
        let masks = Masks::new("build", Some(secrets));
        let mut inner = masks.lock();
        inner.add("build", b"token-abcdef");
        inner.add("build", b"q7zx");
        drop(inner);
        let current = masks.take();
        assert_eq!(current.generation, 1);
        let p = current.patterns.unwrap();
        let mut out = Vec::new();
        let mut r = redact::Redactor::new(p);
        r.push(b"secret-value-1 token-abcdef q7zx", &mut out);
        r.finish(&mut out);
        assert_eq!(out, b"*** *** q7zx");
        assert!(matches!(
            current.events.as_slice(),
            [Event::MaskAdded { count: 1, .. }, Event::MaskRefused { reason, .. }]
                if !reason.contains("q7zx")
        ));
        assert!(
            masks.take().events.is_empty(),
            "events are handed over once"
        );
    }

    #[test]
    fn at_most_the_limit_of_values_is_registered() {
        let masks = Masks::new("build", None);
        let mut inner = masks.lock();
        for i in 0..=MAX_RUNTIME_MASKS {
            inner.add("build", format!("value-{i:04}").as_bytes());
        }
        assert_eq!(inner.added, MAX_RUNTIME_MASKS);
        assert!(matches!(
            inner.events.last(),
            Some(Event::MaskRefused { .. })
        ));
    }

    #[test]
    fn refusals_past_the_first_few_are_counted_not_reported() {
        let masks = Masks::new("build", None);
        assert!(masks.unreported().is_none());
        let mut inner = masks.lock();
        for _ in 0..1000 {
            inner.add("build", b"x");
        }
        drop(inner);
        let events = masks.take().events;
        assert_eq!(events.len(), MAX_REFUSALS);
        match masks.unreported() {
            Some(Event::MaskRefused { reason, .. }) => {
                assert!(reason.starts_with("984 more values"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
