//! The redactor: whatever the secrets, the text and the way it is chunked
//! (with idle flushes between chunks), the output equals masking the whole
//! text at once, after each chunk exactly the bytes that could begin an
//! occurrence are held back, and nothing panics.
//!
//! Input layout: a byte for the number of secrets (1 to 4); for each, a
//! length byte (6 to 40 bytes) and the bytes; a byte for the number of
//! chunk sizes (1 to 8) and one byte for each (low 6 bits: size - 1; high
//! bit: flush after the chunk); then the text, as operations: `0x00-0x7f`
//! n literal bytes follow (n = op), `0x80-0xbf` a whole form of a secret
//! (two bytes: secret, form), `0xc0-0xff` the first bytes of a form (three
//! bytes: secret, form, how many).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use redact::{variants, Patterns, Redactor, MASK};

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}

/// Marks every byte covered by an occurrence of a pattern, then writes one
/// mask per marked run.
fn reference(patterns: &[Vec<u8>], text: &[u8]) -> Vec<u8> {
    let mut marked = vec![false; text.len()];
    for p in patterns {
        if p.len() > text.len() {
            continue;
        }
        for i in 0..=text.len() - p.len() {
            if &text[i..i + p.len()] == p.as_slice() {
                marked[i..i + p.len()].fill(true);
            }
        }
    }
    let mut out = Vec::new();
    for (i, &b) in text.iter().enumerate() {
        if !marked[i] {
            out.push(b);
        } else if i == 0 || !marked[i - 1] {
            out.extend_from_slice(MASK);
        }
    }
    out
}

/// Length of the longest suffix of `text`, shorter than `longest`, that
/// begins some pattern: the bytes the redactor must hold back.
fn pending(patterns: &[Vec<u8>], text: &[u8], longest: usize) -> usize {
    (1..longest.min(text.len() + 1))
        .rev()
        .find(|&n| patterns.iter().any(|p| p.starts_with(&text[text.len() - n..])))
        .unwrap_or(0)
}

fn parse(data: &[u8]) -> Option<(Vec<Vec<u8>>, Vec<(usize, bool)>, Vec<u8>)> {
    let mut input = Input(data);
    let count = 1 + usize::from(input.byte()? % 4);
    let mut secrets = Vec::with_capacity(count);
    for _ in 0..count {
        let len = 6 + usize::from(input.byte()? % 35);
        secrets.push(input.bytes(len)?.to_vec());
    }
    let sizes = 1 + usize::from(input.byte()? % 8);
    let mut feed = Vec::with_capacity(sizes);
    for _ in 0..sizes {
        let b = input.byte()?;
        feed.push((1 + usize::from(b & 0x3f), b & 0x80 != 0));
    }
    let forms: Vec<Vec<Vec<u8>>> = secrets
        .iter()
        .map(|s| variants(s).iter().map(|v| v.bytes().to_vec()).collect())
        .collect();
    let mut text = Vec::new();
    while let Some(op) = input.byte() {
        match op {
            0x00..=0x7f => {
                let n = usize::from(op).min(input.0.len());
                text.extend_from_slice(input.bytes(n)?);
            }
            _ => {
                let secret = &forms[usize::from(input.byte()?) % forms.len()];
                let form = &secret[usize::from(input.byte()?) % secret.len()];
                if op < 0xc0 {
                    text.extend_from_slice(form);
                } else {
                    let keep = usize::from(input.byte()?) % form.len();
                    text.extend_from_slice(&form[..keep]);
                }
            }
        }
    }
    Some((secrets, feed, text))
}

fuzz_target!(|data: &[u8]| {
    let Some((secrets, feed, text)) = parse(data) else {
        return;
    };
    let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
    let Ok(patterns) = Patterns::new(&refs) else {
        return;
    };
    let patterns = Arc::new(patterns);
    let longest = patterns.longest();
    let forms: Vec<Vec<u8>> = secrets
        .iter()
        .flat_map(|s| variants(s))
        .map(|v| v.bytes().to_vec())
        .collect();
    let mut redactor = Redactor::new(patterns);
    let mut out = Vec::new();
    let mut pushed = 0;
    for (size, flush) in feed.iter().cycle() {
        if pushed == text.len() {
            break;
        }
        let end = (pushed + size).min(text.len());
        redactor.push(&text[pushed..end], &mut out);
        pushed = end;
        // Exactly the bytes that could begin an occurrence are held back.
        assert_eq!(redactor.held(), pending(&forms, &text[..pushed], longest));
        if *flush {
            redactor.flush_safe(&mut out);
        }
    }
    redactor.finish(&mut out);
    assert_eq!(out, reference(&forms, &text));
});
