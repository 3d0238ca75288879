//! Unit tests of the redactor as a whole.

use std::sync::Arc;

use crate::{variants, Form, Patterns, RedactError, Redactor, MASK, MIN_SECRET_LEN};

/// Masks every occurrence of every form of every secret in `text`, at once:
/// mark each byte covered by an occurrence, write one mask per marked run.
fn reference(secrets: &[&[u8]], text: &[u8]) -> Vec<u8> {
    let patterns: Vec<Vec<u8>> = secrets
        .iter()
        .flat_map(|s| variants(s))
        .map(|v| v.bytes().to_vec())
        .collect();
    let mut marked = vec![false; text.len()];
    for p in &patterns {
        for i in 0..text.len().saturating_sub(p.len() - 1) {
            if text[i..].starts_with(p) {
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

fn redactor(secrets: &[&[u8]]) -> Redactor {
    Redactor::new(Arc::new(Patterns::new(secrets).unwrap()))
}

/// Pushes `chunks` one by one, then finishes.
fn run(secrets: &[&[u8]], chunks: &[&[u8]]) -> Vec<u8> {
    let mut r = redactor(secrets);
    let mut out = Vec::new();
    for c in chunks {
        r.push(c, &mut out);
        assert!(
            r.held() < r.patterns().longest().max(1),
            "held {}",
            r.held()
        );
    }
    r.finish(&mut out);
    out
}

fn whole(secrets: &[&[u8]], text: &[u8]) -> Vec<u8> {
    run(secrets, &[text])
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SECRET: &[u8] = b"p@ss/w0rd \"x\"\\\t'$`<&>~*!";

#[test]
fn every_form_is_masked() {
    let forms = variants(SECRET);
    assert!(forms.len() > 20, "{}", forms.len());
    for v in &forms {
        let mut text = b"before ".to_vec();
        text.extend_from_slice(v.bytes());
        text.extend_from_slice(b" after");
        let out = whole(&[SECRET], &text);
        assert_eq!(show(&out), "before *** after", "{:?}", v.form());
    }
}

#[test]
fn a_near_miss_is_not_masked() {
    let secret: &[u8] = b"correct-horse-battery";
    for v in variants(secret) {
        let bytes = v.bytes();
        // Change one byte in the middle to one that no form of the secret
        // has there.
        let mut text = bytes.to_vec();
        let mid = bytes.len() / 2;
        text[mid] = b'#';
        let out = whole(&[secret], &text);
        assert_eq!(out, text, "{:?}", v.form());
        // One byte short of the pattern at either end (unless that is
        // another form: an open base64 form is an unpadded one, shortened).
        let forms = variants(secret);
        for short in [&bytes[1..], &bytes[..bytes.len() - 1]] {
            let inside =
                |f: &crate::Variant| short.windows(f.bytes().len()).any(|w| w == f.bytes());
            if !forms.iter().any(inside) {
                assert_eq!(whole(&[secret], short), short, "{:?}", v.form());
            }
        }
    }
}

#[test]
fn examples_of_forms() {
    let s: &[u8] = b"s3cr3t/t0ken";
    let cases: &[(&[u8], &str)] = &[
        (b"token=s3cr3t/t0ken;", "token=***;"),
        (
            b"hex 73336372337432f74306b656e",
            "hex 73336372337432f74306b656e",
        ),
        (b"hex 7333637233742f74306b656e!", "hex ***!"),
        (b"HEX 7333637233742F74306B656E", "HEX ***"),
        (b"b64 czNjcjN0L3Qwa2Vu", "b64 ***"),
        (b"basic dXNlcjpzM2NyM3QvdDBrZW4=", "basic dXNlcjp***"),
        (b"url s3cr3t%2Ft0ken&x", "url ***&x"),
        (b"url s3cr3t%2ft0ken&x", "url ***&x"),
        (br#"{"t":"s3cr3t\/t0ken"}"#, r#"{"t":"***"}"#),
    ];
    for (text, want) in cases {
        assert_eq!(show(&whole(&[s], text)), *want, "{}", show(text));
    }
}

#[test]
fn multi_line_secret() {
    let key: &[u8] = b"-----BEGIN TEST KEY-----\nMIIBVAIBADANBgkqhkiG9w0\nBAQEFAASCAT4wggE6AgEAAkEA\n-----END TEST KEY-----\n";
    // Whole, with either line ending.
    assert_eq!(show(&whole(&[key], key)), "***");
    let crlf = show(key).replace('\n', "\r\n");
    assert_eq!(show(&whole(&[key], crlf.as_bytes())), "***");
    // Line by line, with other text around.
    let text = b"line 1: MIIBVAIBADANBgkqhkiG9w0\nline 2: BAQEFAASCAT4wggE6AgEAAkEA\r\n";
    assert_eq!(show(&whole(&[key], text)), "line 1: ***\nline 2: ***\r\n");
    // In JSON.
    let json = serde_json::to_string(&show(key)).unwrap();
    assert_eq!(show(&whole(&[key], json.as_bytes())), "\"***\"");
}

#[test]
fn overlapping_and_adjacent_secrets_merge() {
    let a: &[u8] = b"abcdefgh";
    let b: &[u8] = b"efghijkl";
    assert_eq!(show(&whole(&[a, b], b"<abcdefghijkl>")), "<***>");
    assert_eq!(show(&whole(&[a, b], b"<abcdefgh efghijkl>")), "<*** ***>");
    // Adjacent occurrences make one run.
    assert_eq!(show(&whole(&[a, b], b"<abcdefghefghijkl>")), "<***>");
    assert_eq!(show(&whole(&[a], b"abcdefghabcdefgh.")), "***.");
    // A secret inside another.
    let inner: &[u8] = b"cdefgh";
    assert_eq!(show(&whole(&[a, inner], b"xcdefghx abcdefgh")), "x***x ***");
}

#[test]
fn a_secret_that_is_a_prefix_of_another() {
    let short: &[u8] = b"abcdefgh";
    let long: &[u8] = b"abcdefghij";
    assert_eq!(
        show(&whole(&[short, long], b"xx abcdefghij yy")),
        "xx *** yy"
    );
    assert_eq!(
        show(&whole(&[short, long], b"xx abcdefghiz yy")),
        "xx ***iz yy"
    );
    assert_eq!(show(&whole(&[long, short], b"abcdefghi")), "***i");
}

#[test]
fn every_two_chunk_split() {
    let a: &[u8] = b"abcdefgh";
    let b: &[u8] = b"efghijkl";
    let c: &[u8] = b"p@ss w/rd!";
    let secrets = [a, b, c];
    let mut text = b"start abcdefghijkl mid ".to_vec();
    for v in variants(c) {
        text.extend_from_slice(v.bytes());
        text.push(b' ');
    }
    text.extend_from_slice(b"abcdefgabcdefgh efghijk end");
    let want = reference(&secrets, &text);
    assert_eq!(whole(&secrets, &text), want);
    for cut in 0..=text.len() {
        let (x, y) = text.split_at(cut);
        assert_eq!(show(&run(&secrets, &[x, y])), show(&want), "cut at {cut}");
    }
    // And one byte at a time.
    let bytes: Vec<&[u8]> = text.chunks(1).collect();
    assert_eq!(run(&secrets, &bytes), want);
}

#[test]
fn empty_input_and_no_secrets() {
    assert_eq!(run(&[b"abcdefgh"], &[]), b"");
    assert_eq!(run(&[b"abcdefgh"], &[b"", b"", b""]), b"");
    // Without secrets, nothing is held back.
    let mut r = Redactor::new(Arc::new(Patterns::empty()));
    let mut out = Vec::new();
    r.push(b"hello", &mut out);
    assert_eq!(out, b"hello");
    assert_eq!(r.held(), 0);
    r.flush_safe(&mut out);
    r.finish(&mut out);
    assert_eq!(out, b"hello");
}

#[test]
fn holds_back_only_what_could_begin_a_secret() {
    let mut r = redactor(&[b"abcdefgh"]);
    let mut out = Vec::new();
    let mut text = b"x".repeat(100);
    text.extend_from_slice(b" abcd");
    r.push(&text, &mut out);
    assert_eq!(out.len(), 101);
    assert_eq!(r.held(), 4);
    // Short chunks too.
    r.push(b"e", &mut out);
    assert_eq!(r.held(), 5);
    r.push(b"Z", &mut out);
    assert_eq!(r.held(), 0);
    r.flush_safe(&mut out);
    assert_eq!(r.held(), 0);
    assert_eq!(show(&out[101..]), "abcdeZ");
    // A prefix of a longer form (hex) is held back too.
    r.push(b" 61626364", &mut out);
    assert_eq!(r.held(), 8);
    r.push(b"\n", &mut out);
    assert_eq!(r.held(), 0);
}

#[test]
fn flush_safe_never_releases_part_of_a_secret() {
    let secret: &[u8] = b"SECRET-VALUE-42";
    let mut r = redactor(&[secret]);
    let mut out = Vec::new();
    r.push(b"log line\ntoken: SECRET-VA", &mut out);
    r.flush_safe(&mut out);
    assert_eq!(show(&out), "log line\ntoken: ");
    r.push(b"LUE-42 done\n", &mut out);
    r.flush_safe(&mut out);
    assert_eq!(show(&out), "log line\ntoken: *** done\n");
    assert_eq!(r.held(), 0);
    // A finished secret at the end of what has arrived is released masked.
    r.push(b"again SECRET-VALUE-42", &mut out);
    r.flush_safe(&mut out);
    assert_eq!(show(&out), "log line\ntoken: *** done\nagain ***");
    // ... and stays one run if the next bytes continue it.
    r.push(b"SECRET-VALUE-42!", &mut out);
    r.finish(&mut out);
    assert_eq!(show(&out), "log line\ntoken: *** done\nagain ***!");
}

#[test]
fn add_at_runtime() {
    let mut r = redactor(&[b"first-secret", b"regular-expression"]);
    let mut out = Vec::new();
    // "first-sec" and "reg" are held back: they may begin a secret.
    r.push(b"first-sec", &mut out);
    r.push(b"ret and reg", &mut out);
    assert_eq!(show(&out), "*** and ");
    assert_eq!(r.held(), 3);
    // The held bytes are scanned again with the new value, which they
    // begin.
    r.add(&[b"registered-later"]).unwrap();
    r.push(b"istered-later, registered-later and first-", &mut out);
    r.push(b"secret\n", &mut out);
    r.finish(&mut out);
    assert_eq!(show(&out), "*** and ***, *** and ***\n");

    // Bytes already released are not revisited.
    let mut r = redactor(&[b"first-secret"]);
    let mut out = Vec::new();
    r.push(b"registered-later\n", &mut out);
    r.add(&[b"registered-later"]).unwrap();
    r.push(b"registered-later\n", &mut out);
    r.finish(&mut out);
    assert_eq!(show(&out), "registered-later\n***\n");

    // A refused value changes nothing.
    let err = r.add(&[b"short"]).unwrap_err();
    assert!(matches!(err, RedactError::TooShort { len: 5 }));
    assert_eq!(r.patterns().secrets(), 2);
}

#[test]
fn add_to_an_empty_set_and_share_patterns() {
    let mut r = Redactor::new(Arc::new(Patterns::empty()));
    let mut out = Vec::new();
    r.add(&[b"now-a-secret"]).unwrap();
    r.push(b"now-a-secret", &mut out);
    r.finish(&mut out);
    assert_eq!(out, b"***");

    let shared = Arc::new(Patterns::new(&[b"abcdefgh"]).unwrap());
    let more = Arc::new(shared.with(&[b"abcdijkl"]).unwrap());
    let mut stdout = Redactor::new(shared.clone());
    let mut stderr = Redactor::new(shared);
    let (mut o1, mut o2) = (Vec::new(), Vec::new());
    stdout.push(b"abcd", &mut o1);
    stderr.push(b"abcd", &mut o2);
    stdout.set_patterns(more.clone());
    stderr.set_patterns(more);
    stdout.push(b"ijkl", &mut o1);
    stderr.push(b"ijkL", &mut o2);
    stdout.finish(&mut o1);
    stderr.finish(&mut o2);
    assert_eq!(o1, b"***");
    assert_eq!(o2, b"abcdijkL");
}

#[test]
fn refuses_short_secrets() {
    for len in 0..MIN_SECRET_LEN {
        let value = vec![b'z'; len];
        let err = Patterns::new(&[&value]).unwrap_err();
        assert!(err.to_string().contains("at least 6 bytes"), "{err}");
        assert!(!err.to_string().contains('z'));
    }
    assert!(Patterns::new(&[b"zzzzzz"]).is_ok());
}

#[test]
fn finish_makes_the_redactor_reusable() {
    let mut r = redactor(&[b"abcdefgh"]);
    let mut out = Vec::new();
    r.push(b"abcd", &mut out);
    r.finish(&mut out);
    assert_eq!(out, b"abcd");
    out.clear();
    r.push(b"efgh", &mut out);
    r.finish(&mut out);
    assert_eq!(out, b"efgh");
}

#[test]
fn long_chunks_and_many_secrets() {
    let secrets: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("tok{i:03}-{}", "q".repeat(i % 30)).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
    let mut text = Vec::new();
    for i in 0..2000 {
        text.extend_from_slice(format!("line {i}: compiling crate-{} ", i * 7).as_bytes());
        if i % 37 == 0 {
            let v = variants(&secrets[i % 200]);
            text.extend_from_slice(v[i % v.len()].bytes());
        }
        text.push(b'\n');
    }
    let want = reference(&refs, &text);
    assert_ne!(want, text);
    for size in [1, 7, 64, 1000, 4096, text.len()] {
        let chunks: Vec<&[u8]> = text.chunks(size).collect();
        assert_eq!(run(&refs, &chunks), want, "chunks of {size}");
    }
}

#[test]
fn variant_forms_are_listed() {
    let forms: Vec<Form> = variants(b"abc\ndefghij").iter().map(|v| v.form()).collect();
    assert_eq!(forms[0], Form::Exact);
    assert!(forms.contains(&Form::Line));
    assert!(forms.contains(&Form::LineEndings));
}

/// Length of the longest suffix of `text`, shorter than `longest`, that
/// begins some form of some secret.
fn pending(forms: &[Vec<u8>], text: &[u8], longest: usize) -> usize {
    (1..longest.min(text.len() + 1))
        .rev()
        .find(|&n| forms.iter().any(|p| p.starts_with(&text[text.len() - n..])))
        .unwrap_or(0)
}

#[test]
fn holds_back_exactly_the_possible_beginnings() {
    let secrets: [&[u8]; 3] = [b"abcdefgh", b"efghijkl", b"p@ss w/rd!"];
    let forms: Vec<Vec<u8>> = secrets
        .iter()
        .flat_map(|s| variants(s))
        .map(|v| v.bytes().to_vec())
        .collect();
    let mut text = b"x abcdefghijkl abcd efgh ".to_vec();
    for v in variants(secrets[2]) {
        text.extend_from_slice(v.bytes());
        text.extend_from_slice(&v.bytes()[..v.bytes().len() / 2]);
        text.push(b' ');
    }
    for size in [1, 2, 3, 5, 8, 13, 64] {
        let mut r = redactor(&secrets);
        let longest = r.patterns().longest();
        let mut out = Vec::new();
        let mut pushed = 0;
        for chunk in text.chunks(size) {
            r.push(chunk, &mut out);
            pushed += chunk.len();
            assert_eq!(
                r.held(),
                pending(&forms, &text[..pushed], longest),
                "size {size} at {pushed}: {:?}",
                show(&text[pushed.saturating_sub(30)..pushed])
            );
        }
        r.finish(&mut out);
        assert_eq!(out, reference(&secrets, &text));
    }
}
