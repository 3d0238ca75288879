//! Unit tests of loading and evaluation; the error paths and the shipped
//! rules are tested in `tests/rules.rs`.

use super::*;

const RULES_DOC: &str = include_str!("../../../../docs/RULES.md");

fn one(text: &str) -> Result<Rules, RuleError> {
    Rules::load(&[("t.yaml", text)])
}

#[test]
fn builtin_rules_load() {
    let rules = Rules::load(BUILTIN).unwrap();
    assert!(rules.rules().len() >= 16);
    assert_eq!(Rules::builtin().rules().len(), rules.rules().len());
}

#[test]
fn rules_are_indexed_by_kind() {
    let rules = one(concat!(
        "- {id: a, severity: low, description: d, on: exec, when: {binary: nc}}\n",
        "- {id: b, severity: low, description: d, on: egress, when: {port: 4444}}\n",
        "- {id: c, severity: low, description: d, on: exec, when: {binary: {in: [nc, ncat]}}}\n",
    ))
    .unwrap();
    assert_eq!(rules.by_kind[slot(Kind::Exec)], [0, 2]);
    assert_eq!(rules.by_kind[slot(Kind::Egress)], [1]);
    let exec = Observation::new(Kind::Exec).with("binary", "nc");
    let ids: Vec<&str> = rules.evaluate(&exec).map(Rule::id).collect();
    assert_eq!(ids, ["a", "c"]);
    // Same field values, other kind: only that kind's rules are looked at.
    let limit = Observation::new(Kind::Limit).with("limit", "pids");
    assert_eq!(rules.evaluate(&limit).count(), 0);
    let egress = Observation::new(Kind::Egress).with("port", 4444u64);
    assert!(rules.get("b").unwrap().matches(&egress));
    assert!(!rules.get("a").unwrap().matches(&egress));
    for kind in Kind::ALL {
        assert_eq!(
            slot(kind),
            Kind::ALL.iter().position(|k| *k == kind).unwrap()
        );
    }
}

#[test]
fn defaults_and_accessors() {
    let rules = one(
        "# leading comment\n- id: r1\n  severity: high\n  description: ' d '\n  on: limit\n  when:\n    limit: pids\n",
    )
    .unwrap();
    let r = &rules.rules()[0];
    assert_eq!(r.id(), "r1");
    assert_eq!(r.severity(), Severity::High);
    assert_eq!(r.description(), "d");
    assert_eq!(r.reason(), None);
    assert_eq!(r.kind(), Kind::Limit);
    assert_eq!(r.action(), Action::Alert);
    assert_eq!(r.source(), "t.yaml:2");
}

#[test]
fn empty_files_hold_no_rules() {
    for text in ["", "# nothing yet\n", "---\n", "[]\n"] {
        assert!(one(text).unwrap().rules().is_empty(), "{text:?}");
    }
}

#[test]
fn severities_order_and_names() {
    assert!(Severity::Info < Severity::Low && Severity::High < Severity::Critical);
    for s in Severity::ALL {
        assert_eq!(Severity::from_name(&s.to_string()), Some(s));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.name())
        );
    }
    let back: Severity = serde_json::from_str("\"critical\"").unwrap();
    assert_eq!(back, Severity::Critical);
    assert_eq!(serde_json::to_string(&Action::Kill).unwrap(), "\"kill\"");
    assert_eq!(Action::from_name("alert"), Some(Action::Alert));
    assert_eq!(Action::from_name("Kill"), None);
}

#[test]
fn with_dir_adds_sorted_yaml_files() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |id: &str| {
        format!("- {{id: {id}, severity: low, description: d, on: exec, when: {{binary: x}}}}\n")
    };
    std::fs::write(dir.path().join("b.yaml"), rule("from-b")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), rule("from-a")).unwrap();
    std::fs::write(dir.path().join("c.yml"), "not: [loaded").unwrap();
    std::fs::write(dir.path().join(".swap.yaml"), "not: [loaded").unwrap();
    let rules = Rules::with_dir(dir.path()).unwrap();
    let builtin = Rules::builtin().rules().len();
    let ids: Vec<&str> = rules.rules()[builtin..].iter().map(Rule::id).collect();
    assert_eq!(ids, ["from-a", "from-b"]);
    let src = rules.get("from-b").unwrap().source();
    assert!(src.ends_with("b.yaml:1"), "{src}");

    // An operator rule may not reuse a shipped id.
    std::fs::write(dir.path().join("d.yaml"), rule("crypto-miner-binary")).unwrap();
    let err = Rules::with_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("d.yaml:1:8: duplicate rule id \"crypto-miner-binary\" (first defined at resources/rules/mining.yaml:"), "{err}");
}

#[test]
fn with_dir_reports_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    let err = Rules::with_dir(&missing).unwrap_err();
    assert!(matches!(err, RuleError::Read { .. }), "{err}");
    assert!(
        err.to_string().contains("none: cannot read rules:"),
        "{err}"
    );
    assert_eq!(err.position(), None);

    std::fs::write(dir.path().join("big.yaml"), vec![b'#'; 2 << 20]).unwrap();
    let err = Rules::with_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("big.yaml: rule file is too large (1048577 bytes"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("big.yaml")).unwrap();

    std::fs::write(dir.path().join("latin1.yaml"), b"# ok\n- id: caf\xe9\n").unwrap();
    let err = Rules::with_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("latin1.yaml:2:10: rule file is not valid UTF-8"),
        "{err}"
    );
}

/// docs/RULES.md has a section per kind whose table lists every field.
#[test]
fn rules_doc_lists_every_field() {
    for kind in Kind::ALL {
        let heading = format!("### `{}`", kind.name());
        let start = RULES_DOC
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/RULES.md has no {heading} section"));
        let section = &RULES_DOC[start + heading.len()..];
        let section = &section[..section.find("\n#").unwrap_or(section.len())];
        for (field, _) in kind.fields() {
            let ty = kind.field_type(field).unwrap();
            let row = format!("| `{field}` | {ty} |");
            assert!(
                section.contains(&row),
                "docs/RULES.md: the {heading} section lacks the row {row:?}"
            );
        }
    }
}

/// docs/RULES.md's table of shipped rules has every shipped rule, with
/// its severity and action.
#[test]
fn rules_doc_lists_every_shipped_rule() {
    for rule in Rules::builtin().rules() {
        let row = format!(
            "| `{}` | {} | {} | {} |",
            rule.id(),
            rule.kind(),
            rule.severity(),
            rule.action()
        );
        assert!(
            RULES_DOC.contains(&row),
            "docs/RULES.md lacks the row {row:?}"
        );
    }
}
