//! Property tests: `parse` never panics, whatever the input, and its errors
//! always point into the file.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use proptest::prelude::*;

/// A valid pipeline touching most of the grammar, to be mutated.
const VALID: &str = r#"version: 1
name: demo
env: { GREETING: hello, N: 1.5 }
jobs:
  lint:
    steps: [make lint]
  build: &build
    needs: [lint]
    image: host
    workdir: /workspace
    env:
      CC: gcc
    secrets:
      - DEPLOY_TOKEN
      - { name: NPM_TOKEN, env: NPM_TOKEN }
    network:
      egress: ["example.org:443", "*.crates.io:443", "[::1]:*"]
    resources: { cpus: 1.5, memory: 512MiB, pids: 256, disk: 1GiB, timeout: 1h30m }
    steps:
      - name: compile
        run: |
          gcc -o /workspace/hello /src/hello.c
        timeout: 2m
      - ./hello
    artifacts: [hello]
  test:
    <<: *build
    needs: [build]
"#;

fn file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prop.yml")
}

/// Parses and checks what must hold for any input.
fn check(text: &str) -> Result<(), TestCaseError> {
    match spec::parse(text, &file()) {
        Ok(p) => {
            prop_assert!(!p.jobs.is_empty());
            prop_assert!(p.jobs.iter().all(|j| !j.steps.is_empty()));
            let order = p.topo_order();
            let mut seen = vec![false; p.jobs.len()];
            for &i in &order {
                for need in &p.jobs[i].needs {
                    let n = p.jobs.iter().position(|j| &j.id == need).unwrap();
                    prop_assert!(seen[n], "{} runs before {}", p.jobs[i].id, need);
                }
                seen[i] = true;
            }
            prop_assert!(seen.iter().all(|s| *s));
        }
        Err(e) => {
            let shown = e.to_string();
            let lines = text.split('\n').count();
            prop_assert!(e.line >= 1 && e.col >= 1, "no position: {shown}");
            prop_assert!(e.line <= lines + 1, "line {} past the end: {shown}", e.line);
            let prefix = format!("{}:{}:{}: ", file().display(), e.line, e.col);
            prop_assert!(shown.starts_with(&prefix), "{shown}");
            prop_assert!(!e.message.is_empty());
        }
    }
    Ok(())
}

/// One byte-level edit of the valid pipeline.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Bytes that matter to YAML, plus anything.
    let byte = prop_oneof![
        3 => prop::sample::select(b" \t\n:-[]{}&*!|>'\"#,.?%@`~0123456789abcAZ".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

fn apply(edits: &[Edit]) -> String {
    let mut bytes = VALID.as_bytes().to_vec();
    for e in edits {
        let len = bytes.len().max(1);
        match *e {
            Edit::Replace(i, b) => {
                if let Some(x) = bytes.get_mut(i % len) {
                    *x = b;
                }
            }
            Edit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Edit::Delete(i) => {
                if !bytes.is_empty() {
                    bytes.remove(i % len);
                }
            }
            Edit::Duplicate(i, n) => {
                let start = i % len;
                let end = (start + n).min(bytes.len());
                let chunk = bytes[start..end].to_vec();
                bytes.splice(start..start, chunk);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings(text in any::<String>()) {
        check(&text)?;
    }

    #[test]
    fn yaml_ish_strings(text in "[a-z0-9 :\\-\\[\\]{}&*!|>'\"#,.?\n\t]{0,300}") {
        check(&text)?;
    }

    #[test]
    fn mutated_valid_pipeline(edits in prop::collection::vec(edit(), 1..8)) {
        check(&apply(&edits))?;
    }
}

#[test]
fn the_unmutated_pipeline_is_valid() {
    let p = spec::parse(VALID, &file()).unwrap();
    assert_eq!(p.jobs.len(), 3);
    let test = p.job("test").unwrap();
    assert_eq!(test.needs, ["build"]);
    assert_eq!(test.steps.len(), 2);
}
