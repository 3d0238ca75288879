//! Valid pipeline files parse into the expected model.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use spec::{Image, Network, Pipeline, SecretRef, Step, DEFAULT_DISK, DEFAULT_TIMEOUT};

/// A temporary directory with `pipeline.yml` holding `text` and a `src/`
/// directory, parsed with [`spec::load`].
fn load_in_tempdir(text: &str) -> (tempfile::TempDir, Result<Pipeline, spec::SpecError>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let file = dir.path().join("pipeline.yml");
    std::fs::write(&file, text).unwrap();
    let result = spec::load(&file);
    (dir, result)
}

fn here() -> PathBuf {
    // A file in this crate's directory: `source` defaults to the crate.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("airlock.yml")
}

fn parse(text: &str) -> Pipeline {
    spec::parse(text, &here()).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(text: &str) -> String {
    spec::parse(text, Path::new("t.yml"))
        .unwrap_err()
        .to_string()
}

const FULL: &str = r#"
version: 1
name: demo
env: { GREETING: hello, RATIO: 1.50, DEBUG: true, QUOTED: "  x  " }
jobs:
  lint:
    steps:
      - make lint
  build:
    needs: [lint]
    image: host
    source: ./src
    workdir: /workspace//out/
    env: { CC: gcc }
    secrets:
      - DEPLOY_TOKEN
      - { name: NPM_TOKEN, env: NPM_TOKEN }
    network:
      egress: ["Example.org:443", "*.crates.io:443", "[2001:db8::1]:*", "10.0.0.1:80"]
    resources: { cpus: 1.5, memory: 512MiB, pids: 256, disk: 1GiB, timeout: 10m }
    steps:
      - name: compile
        run: |
          gcc -o /workspace/hello /src/hello.c
        timeout: 2m
      - run: ./hello
    artifacts: [hello, ./out//bin/]
  publish:
    needs: [build]
    image: registry.example.org/builder@sha256:abcd
    network: none
    steps: [echo done]
"#;

#[test]
fn full_example_uses_every_key() {
    let (dir, result) = load_in_tempdir(FULL);
    let p = result.unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path().canonicalize().unwrap();

    assert_eq!(p.name, "demo");
    assert_eq!(p.file, dir.path().join("pipeline.yml"));
    assert_eq!(p.env["GREETING"], "hello");
    assert_eq!(p.env["RATIO"], "1.50", "numbers keep their source text");
    assert_eq!(p.env["DEBUG"], "true");
    assert_eq!(p.env["QUOTED"], "  x  ");
    let ids: Vec<&str> = p.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["lint", "build", "publish"]);

    let lint = &p.jobs[0];
    assert_eq!(lint.location, spec::Location { line: 6, col: 3 });
    assert_eq!(lint.source, root, "source defaults to the file's directory");

    let b = p.job("build").unwrap();
    assert_eq!(b.location, spec::Location { line: 9, col: 3 });
    assert_eq!(b.needs, ["lint"]);
    assert_eq!(b.image, Image::Host);
    assert_eq!(b.source, root.join("src"));
    assert!(b.source.is_absolute());
    assert_eq!(b.workdir, "/workspace/out");
    assert_eq!(b.env.len(), 1);
    assert_eq!(b.env["CC"], "gcc");
    assert_eq!(
        b.secrets,
        [
            SecretRef {
                name: "DEPLOY_TOKEN".into(),
                env: None,
                location: spec::Location { line: 16, col: 9 },
            },
            SecretRef {
                name: "NPM_TOKEN".into(),
                env: Some("NPM_TOKEN".into()),
                location: spec::Location { line: 17, col: 17 },
            },
        ]
    );
    assert_eq!(
        b.network,
        Network::Egress(vec![
            "example.org:443".into(),
            "*.crates.io:443".into(),
            "[2001:db8::1]:*".into(),
            "10.0.0.1:80".into(),
        ])
    );
    assert_eq!(b.resources.cpus, Some(1.5));
    assert_eq!(b.resources.memory, Some(512 << 20));
    assert_eq!(b.resources.pids, Some(256));
    assert_eq!(b.resources.disk, 1 << 30);
    assert_eq!(b.resources.timeout, Duration::from_secs(600));
    assert_eq!(
        b.steps,
        [
            Step {
                name: "compile".into(),
                run: "gcc -o /workspace/hello /src/hello.c\n".into(),
                timeout: Some(Duration::from_secs(120)),
            },
            Step {
                name: "./hello".into(),
                run: "./hello".into(),
                timeout: None,
            },
        ]
    );
    assert_eq!(b.artifacts, ["hello", "out/bin"]);

    let publish = p.job("publish").unwrap();
    assert_eq!(
        publish.image,
        Image::Oci("registry.example.org/builder@sha256:abcd".into())
    );
    assert_eq!(publish.network, Network::None);
    assert_eq!(publish.steps[0].run, "echo done");
}

#[test]
fn defaults_are_filled_in() {
    let p = parse("version: 1\njobs:\n  build:\n    steps: [make]\n");
    assert_eq!(p.name, "airlock", "name defaults to the file stem");
    assert!(p.env.is_empty());
    let j = &p.jobs[0];
    assert!(j.needs.is_empty());
    assert_eq!(j.image, Image::Host);
    assert_eq!(
        j.source,
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .canonicalize()
            .unwrap()
    );
    assert_eq!(j.workdir, spec::DEFAULT_WORKDIR);
    assert!(j.env.is_empty() && j.secrets.is_empty() && j.artifacts.is_empty());
    assert_eq!(j.network, Network::None);
    assert_eq!(j.resources, spec::Resources::default());
    assert_eq!(j.resources.disk, DEFAULT_DISK);
    assert_eq!(j.resources.timeout, DEFAULT_TIMEOUT);
    assert_eq!(j.resources.cpus, None);
}

#[test]
fn default_name_is_a_sanitised_stem() {
    let text = "version: 1\njobs:\n  a:\n    steps: [x]\n";
    let name = |file: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        spec::parse(text, &path).unwrap().name
    };
    assert_eq!(name("My Build.v2.yml"), "my-build-v2");
    assert_eq!(name(&format!("{}.yml", "Long".repeat(30))).len(), 64);
    assert_eq!(name(".yml"), "yml");
}

#[test]
fn shorthand_steps_and_default_names() {
    let long = "x".repeat(100);
    let p = parse(&format!(
        "version: 1\njobs:\n  a:\n    steps:\n      - make\n      - |\n\n          echo one\n          echo two\n      - {long}\n      - name: named\n        run: true && false\n"
    ));
    let steps = &p.jobs[0].steps;
    assert_eq!(steps[0].name, "make");
    assert_eq!(steps[0].run, "make");
    assert_eq!(steps[1].name, "echo one");
    assert_eq!(steps[1].run, "\necho one\necho two\n");
    assert_eq!(steps[2].name.chars().count(), 60);
    assert!(steps[2].name.ends_with('…'));
    assert_eq!(steps[2].run, long);
    assert_eq!(steps[3].name, "named");
    assert_eq!(steps[3].run, "true && false");
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let p = parse(
        r#"
version: 1
jobs:
  build: &job
    env: &env { CC: gcc, MODE: debug }
    resources: &res { memory: 1GiB, timeout: 5m }
    steps: &steps
      - make
  test:
    env:
      <<: *env
      MODE: release
    resources: *res
    steps: *steps
"#,
    );
    let test = p.job("test").unwrap();
    assert_eq!(test.env["CC"], "gcc");
    assert_eq!(
        test.env["MODE"], "release",
        "explicit keys win over merged ones"
    );
    assert_eq!(test.resources.memory, Some(1 << 30));
    assert_eq!(test.resources.timeout, Duration::from_secs(300));
    assert_eq!(test.steps, p.job("build").unwrap().steps);
}

#[test]
fn merge_key_builds_a_whole_job() {
    let p = parse(
        "version: 1\njobs:\n  base: &base\n    resources: { pids: 10 }\n    steps: [make]\n  other:\n    <<: *base\n    needs: [base]\n",
    );
    let other = p.job("other").unwrap();
    assert_eq!(other.resources.pids, Some(10));
    assert_eq!(other.needs, ["base"]);
    assert_eq!(other.steps[0].run, "make");
}

#[test]
fn numeric_and_quoted_scalars() {
    let p = parse(
        "version: 1\nname: '2024'\nenv:\n  HEX: 0x1F\n  EMPTY: ''\n  MULTI: \"a\\nb\"\njobs:\n  \"1\":\n    steps: [\"make\"]\n  2:\n    needs: [1]\n    resources: { cpus: 2, disk: '64 KiB', timeout: '1h30m' }\n    steps: [make]\n",
    );
    assert_eq!(p.name, "2024");
    assert_eq!(p.env["HEX"], "0x1F");
    assert_eq!(p.env["EMPTY"], "");
    assert_eq!(p.env["MULTI"], "a\nb");
    let two = p.job("2").unwrap();
    assert_eq!(two.needs, ["1"]);
    assert_eq!(two.resources.cpus, Some(2.0));
    assert_eq!(two.resources.disk, 64 << 10);
    assert_eq!(two.resources.timeout, Duration::from_secs(5400));
}

#[test]
fn byte_order_mark_is_ignored() {
    let p = parse("\u{feff}version: 1\njobs:\n  a:\n    steps: [x]\n");
    assert_eq!(p.jobs[0].location, spec::Location { line: 3, col: 3 });
}

#[test]
fn explicit_document_markers_are_fine() {
    let p = parse("%YAML 1.2\n---\nversion: 1\njobs:\n  a:\n    steps: [x]\n...\n");
    assert_eq!(p.jobs.len(), 1);
}

#[test]
fn select_and_topo_order_on_a_parsed_diamond() {
    let p = parse(
        "version: 1\njobs:\n  deploy:\n    needs: [test, docs]\n    steps: [x]\n  docs:\n    needs: [build]\n    steps: [x]\n  lint:\n    steps: [x]\n  test:\n    needs: [build]\n    steps: [x]\n  build:\n    steps: [x]\n",
    );
    let ids = |order: Vec<usize>| -> Vec<String> {
        order.into_iter().map(|i| p.jobs[i].id.clone()).collect()
    };
    assert_eq!(
        ids(p.topo_order()),
        ["lint", "build", "docs", "test", "deploy"]
    );
    assert_eq!(ids(p.select(&["test".into()]).unwrap()), ["build", "test"]);
    assert_eq!(
        ids(p.select(&["deploy".into()]).unwrap()),
        ["build", "docs", "test", "deploy"]
    );
    let err = p.select(&["nope".into()]).unwrap_err();
    assert_eq!(err.known, ["deploy", "docs", "lint", "test", "build"]);
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yml");
    let err = spec::load(&missing).unwrap_err();
    assert_eq!((err.line, err.col), (0, 0));
    assert_eq!(
        err.to_string(),
        format!("{}: pipeline file not found", missing.display())
    );

    let err = spec::load(dir.path()).unwrap_err();
    assert!(err
        .to_string()
        .ends_with(": is a directory (expected a pipeline file)"));

    let big = dir.path().join("big.yml");
    let mut text = String::from("version: 1\n");
    text.push_str(&"#".repeat(usize::try_from(spec::MAX_FILE_SIZE).unwrap()));
    std::fs::write(&big, &text).unwrap();
    let err = spec::load(&big).unwrap_err();
    assert!(
        err.message.starts_with("pipeline file is too large"),
        "{err}"
    );
    assert_eq!(err.location(), None);
    let err = spec::parse(&text, &big).unwrap_err();
    assert!(
        err.message.starts_with("pipeline file is too large"),
        "{err}"
    );
}

#[test]
fn source_default_must_exist() {
    let err = spec::parse(
        "version: 1\njobs:\n  a:\n    steps: [x]\n",
        Path::new("/nonexistent-airlock-dir/p.yml"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent-airlock-dir/p.yml:3:3: source directory"),
        "{err}"
    );
}

#[test]
fn relative_file_resolves_source_from_cwd() {
    // "p.yml" has no directory part: its directory is the current one.
    let p = spec::parse(
        "version: 1\njobs:\n  a:\n    source: .\n    steps: [x]\n",
        Path::new("p.yml"),
    )
    .unwrap();
    assert_eq!(
        p.jobs[0].source,
        std::env::current_dir().unwrap().canonicalize().unwrap()
    );
}

#[test]
fn assorted_rejections() {
    let job = |body: &str| format!("version: 1\njobs:\n  a:\n{body}    steps: [x]\n");
    let cases = [
        (
            job("    resources: { cpus: .inf }\n"),
            "t.yml:4:24: invalid cpus .inf",
        ),
        (
            job("    resources: { cpus: 1025 }\n"),
            "t.yml:4:24: invalid cpus 1025",
        ),
        (
            job("    resources: { pids: 1.5 }\n"),
            "t.yml:4:24: expected a whole number",
        ),
        (
            job("    resources: { memory: true }\n"),
            "t.yml:4:26: expected a size like 512MiB",
        ),
        (
            job("    network: { egress: [] , x: 1 }\n"),
            "t.yml:4:29: unknown key \"x\"",
        ),
        (
            job("    network: {}\n"),
            "t.yml:4:14: missing required key \"egress\"",
        ),
        (
            job("    network: { egress: [a.b:1, A.B:1] }\n"),
            "t.yml:4:32: egress pattern \"a.b:1\" is listed twice",
        ),
        (
            job("    artifacts: [a, ./a]\n"),
            "t.yml:4:20: artifact \"a\" is listed twice",
        ),
        (
            job("    secrets: [{ env: X }]\n"),
            "t.yml:4:15: missing required key \"name\"",
        ),
        (
            job("    secrets: [{ name: A, env: X }, { name: B, env: X }]\n"),
            "t.yml:4:52: environment variable \"X\" is already set by secret \"A\"",
        ),
        (
            job("    image: \"a b\"\n"),
            "t.yml:4:12: invalid image \"a b\"",
        ),
        (
            job("    source: ''\n"),
            "t.yml:4:13: expected a directory path",
        ),
        (
            job("    env: { X: ~ }\n"),
            "t.yml:4:15: expected a string, number or boolean",
        ),
        (
            job("    env: [X]\n"),
            "t.yml:4:10: expected a mapping of variable names",
        ),
        (
            "version: 1\njobs:\n  a:\n    steps:\n      - run: [x]\n".into(),
            "t.yml:5:14: expected a script (a string) for \"run\"",
        ),
        (
            "version: 1\njobs:\n  a:\n    steps:\n      - ~\n".into(),
            "t.yml:5:9: expected a script or a mapping with run for step 1 of job \"a\"",
        ),
        (
            "version: 1\njobs:\n  a:\n    steps:\n      - { run: x, name: ' ' }\n".into(),
            "t.yml:5:25: expected a non-empty step name",
        ),
        (
            "version: 1.0\njobs: {}\n".into(),
            "t.yml:1:10: unsupported version",
        ),
        (
            "version:\njobs: {}\n".into(),
            "t.yml:1:1: unsupported version: expected 1, found nothing",
        ),
        (
            "\"\"".into(),
            "t.yml:1:1: expected a mapping with version and jobs",
        ),
        ("a: *b\n".into(), "t.yml:1:4: invalid yaml:"),
        ("a: 'x\n".into(), "t.yml:1:4: invalid yaml:"),
        ("".into(), "t.yml:1:1: empty pipeline file"),
    ];
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = parse_err(text);
        if !got.starts_with(want) {
            failures.push(format!("{text:?}\n  want {want}\n  got  {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
