//! Malformed pipeline files: each one fails with the exact `file:line:col:`
//! and a message that says what was expected.
//!
//! One file per case in `tests/malformed/`; the table below is the
//! expectation. Every file there must be in the table.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

/// `name: "line:col", "substring of the message";` for `tests/malformed/name.yml`.
macro_rules! cases {
    ($($name:ident: $pos:literal, $message:literal;)*) => {
        const CASES: &[(&str, &str, &str)] = &[$((stringify!($name), $pos, $message)),*];
    };
}

cases! {
    alias_bomb: "10:17", "pipeline too large: more than 250000 values";
    artifact_absolute: "5:24", "invalid artifact path \"/etc/passwd\" in job \"build\": expected a path relative to the";
    artifact_dotdot: "6:9", "invalid artifact path \"out/../../secret\" in job \"build\": '..' is not allowed";
    artifact_empty: "5:17", "invalid artifact path \"./\" in job \"build\": expected a path naming a file or directory";
    bad_cpus: "5:13", "invalid cpus 0 in resources of job \"build\"";
    bad_duration_unit: "5:16", "invalid duration \"5d\" for \"timeout\" in resources of job \"build\": unknown unit \"d\"";
    bad_env_name: "5:7", "invalid environment variable name \"1CC\" in env of job \"build\"";
    bad_image: "4:12", "invalid image \"\" in job \"build\"";
    bad_indentation: "5:8", "invalid yaml: while parsing a block mapping, did not find expected key";
    bad_job_id: "3:3", "invalid job id \"Build\"";
    bad_pids: "5:13", "invalid pids 0 in resources of job \"build\"";
    bad_pipeline_name: "2:7", "invalid pipeline name \"My Pipeline\"";
    bad_secret_name: "5:9", "invalid secret name \"9TOKEN\" in job \"build\"";
    bad_size_unit: "5:15", "invalid size \"512mb\" for \"memory\" in resources of job \"build\": unknown unit \"mb\"";
    bad_version: "1:10", "unsupported version: expected 1, found the number 2";
    bare_number_duration: "4:27", "invalid duration \"30\" for \"timeout\" in resources of job \"build\": expected a duration like";
    bare_number_size: "5:15", "invalid size \"512\" for \"memory\" in resources of job \"build\": expected a size with a unit,";
    cpus_not_number: "5:13", "expected a number of cpus like 1.5 for \"cpus\" in resources of job \"build\", found the";
    cycle2: "7:13", "dependency cycle: a -> b -> a";
    cycle3: "12:9", "dependency cycle: a -> b -> c -> a";
    deep_nesting: "3:68", "values nested too deeply";
    duplicate_env_key: "6:7", "duplicate key \"CC\"";
    duplicate_job: "7:3", "duplicate key \"build\"";
    duplicate_need: "6:19", "job \"lint\" is listed twice in needs of job \"build\"";
    duplicate_secret: "6:17", "secret \"TOKEN\" is requested twice in job \"build\"";
    duplicate_top_key: "5:1", "duplicate key \"version\"";
    duration_order: "6:18", "invalid duration \"30s1m\" for \"timeout\" in step 1 of job \"build\": expected a duration like";
    egress_bad_port: "7:11", "invalid egress pattern \"example.org:70000\" in job \"build\": invalid port \"70000\"";
    egress_bad_wildcard: "4:25", "invalid egress pattern \"a.*.example.org:443\" in job \"build\": invalid host name";
    egress_no_port: "4:25", "invalid egress pattern \"example.org\" in job \"build\": missing port";
    egress_v6_brackets: "4:25", "invalid egress pattern \"2001:db8::1:443\" in job \"build\": IPv6 addresses must be in";
    egress_wildcard_tld: "4:25", "invalid egress pattern \"*.org:443\" in job \"build\": wildcard \"*.org\" is too broad";
    empty_file: "1:1", "empty pipeline file";
    empty_jobs: "2:7", "expected at least one job in \"jobs\"";
    empty_run: "5:14", "expected a non-empty script for \"run\" in step 1 of job \"build\"";
    empty_steps: "4:12", "expected at least one step in \"steps\" of job \"build\"";
    env_name_dash: "3:3", "invalid environment variable name \"MY-VAR\" in env of the pipeline";
    env_value_list: "3:10", "expected a string, number or boolean for \"PATHS\" in env of the pipeline, found a list";
    job_not_mapping: "3:10", "expected a mapping with steps for job \"build\", found the string \"make all\"";
    job_null: "3:3", "expected a mapping with steps for job \"build\", found nothing";
    jobs_not_mapping: "3:3", "expected a mapping of job ids to jobs for \"jobs\" at top level, found a list";
    long_job_id: "3:3", "invalid job id \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…\"";
    missing_jobs: "1:1", "missing required key \"jobs\" at top level";
    missing_run: "5:9", "missing required key \"run\" in step 1 of job \"build\"";
    missing_steps: "4:5", "missing required key \"steps\" in job \"build\"";
    missing_version: "1:1", "missing required key \"version\" at top level";
    multi_document: "5:1", "a second yaml document";
    needs_not_list: "6:12", "expected a list of job ids for \"needs\" in job \"build\", found the string \"lint\"";
    network_bad_string: "4:14", "invalid network \"host\" in job \"build\"";
    non_string_key: "3:5", "expected a string key, found a list";
    not_utf8: "4:17", "pipeline file is not valid UTF-8";
    nul_in_value: "5:9", "value contains a nul byte";
    recursive_alias: "4:12", "alias refers to a value that contains it";
    reserved_env: "3:3", "environment variable \"AIRLOCK_TOKEN\" in env of the pipeline is reserved";
    run_bool: "5:14", "expected a script (a string) for \"run\" in step 1 of job \"build\", found the boolean true";
    secret_env_clash: "6:29", "environment variable \"TOKEN\" for secret \"TOKEN\" in job \"build\" is also set by env";
    secret_env_reserved: "5:29", "environment variable \"AIRLOCK_TOKEN\" for secret \"TOKEN\" in job \"build\" is reserved";
    self_need: "4:13", "job \"build\" needs itself";
    size_overflow: "5:13", "invalid size \"99999999999 TiB\" for \"disk\" in resources of job \"build\": size is too large";
    source_missing: "4:13", "source directory \"./no-such-dir\" does not exist";
    source_not_dir: "4:13", "source \"source_not_dir.yml\" is not a directory";
    steps_not_list: "4:12", "expected a list of steps for \"steps\" in job \"build\", found the string \"make\"";
    syntax_error: "5:7", "invalid yaml: illegal placement of ':' indicator";
    tab_indent: "3:2", "invalid yaml: tabs disallowed within this context";
    tag: "1:16", "yaml tags are not supported";
    top_not_mapping: "1:1", "expected a mapping with version and jobs for the pipeline, found a list";
    unknown_job_key: "4:5", "unknown key \"stpes\" in job \"build\" (expected one of: needs, image, source, workdir, env,";
    unknown_need: "6:19", "unknown job \"tset\" in needs of job \"build\"";
    unknown_network_key: "5:7", "unknown key \"egres\" in network of job \"build\" (expected one of: egress)";
    unknown_resources_key: "4:18", "unknown key \"cpu\" in resources of job \"build\" (expected one of: cpus, memory, pids, disk,";
    unknown_secret_key: "5:28", "unknown key \"envv\" in a secret of job \"build\" (expected one of: name, env)";
    unknown_step_key: "6:9", "unknown key \"rnu\" in step 1 of job \"build\" (expected one of: name, run, timeout)";
    unknown_top_key: "2:1", "unknown key \"jbos\" at top level (expected one of: version, name, env, jobs)";
    version_string: "1:10", "unsupported version: expected 1, found the string \"1\"";
    workdir_dotdot: "4:14", "invalid workdir \"/workspace/../etc\" in job \"build\": '..' is not allowed";
    workdir_relative: "4:14", "invalid workdir \"workspace\" in job \"build\": expected an absolute path like /workspace";
    workdir_reserved: "4:14", "invalid workdir \"/usr/local/build\" in job \"build\": /usr is reserved by the sandbox";
    workdir_root: "4:14", "invalid workdir \"//\" in job \"build\": expected a directory below / like /workspace, not /";
    zero_duration: "6:18", "invalid duration \"0s\" for \"timeout\" in step 1 of job \"build\": duration must be greater";
    zero_size: "5:13", "invalid size \"0MiB\" for \"disk\" in resources of job \"build\": size must be greater than 0";
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/malformed")
}

#[test]
fn every_malformed_file_fails_where_expected() {
    let mut failures = Vec::new();
    for (name, pos, message) in CASES {
        let path = dir().join(format!("{name}.yml"));
        let shown = match spec::load(&path) {
            Ok(_) => {
                failures.push(format!("{name}: parsed without error"));
                continue;
            }
            Err(e) => e.to_string(),
        };
        let prefix = format!("{}:{pos}: ", path.display());
        let first = shown.get(prefix.len()..).and_then(|m| m.chars().next());
        if first.is_some_and(char::is_uppercase) || shown.ends_with('.') {
            failures.push(format!("{name}: message style: {shown}"));
        }
        if !shown.starts_with(&prefix) || !shown.contains(message) {
            failures.push(format!(
                "{name}:\n  want {prefix}...{message}...\n  got  {shown}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_file_has_a_case() {
    let listed: BTreeSet<String> = CASES.iter().map(|(n, _, _)| format!("{n}.yml")).collect();
    let present: BTreeSet<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, present);
    assert!(CASES.len() >= 30);
}

#[test]
fn errors_carry_position_fields() {
    let path = dir().join("unknown_job_key.yml");
    let err = spec::load(&path).unwrap_err();
    assert_eq!((err.line, err.col), (4, 5));
    assert_eq!(err.file, path);
    assert!(!err.message.ends_with('.'));
    assert_eq!(
        err.message,
        err.message.to_lowercase().replace("utf-8", "UTF-8")
    );
}
