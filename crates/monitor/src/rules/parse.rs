//! From a rule file's node tree to [`Rule`]s: every key checked by hand,
//! every error at the offending key or value.

use regex::RegexBuilder;
use yamltree::{self as yaml, Entry, Location as Loc, Node};

use super::condition::{Condition, Test};
use super::error::{quote, Position, RuleError};
use super::{Action, Rule, Severity, MAX_FILE_SIZE, MAX_ID_CHARS};
use crate::observation::{FieldType, Kind, Value};

const RULE_KEYS: &[&str] = &[
    "id",
    "severity",
    "description",
    "on",
    "when",
    "action",
    "reason",
];

/// What a rule file may use of YAML: no merge keys (`<<` is an unknown key).
const YAML: yaml::Options = yaml::Options {
    what: "rule file",
    document: "one list of rules",
    merge_keys: false,
};

/// Most bytes a compiled regex may take (the `regex` crate's size limit).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Most bytes of lazy DFA cache per regex.
const REGEX_DFA_LIMIT: usize = 1 << 20;

/// Parses one rule file into its rules, each with the position of its id.
pub(crate) fn file(name: &str, text: &str) -> Result<Vec<(Rule, Position)>, RuleError> {
    let size = u64::try_from(text.len()).unwrap_or(u64::MAX);
    if size > MAX_FILE_SIZE {
        return Err(RuleError::TooLarge {
            file: name.to_owned(),
            size,
        });
    }
    // Editors do not count a byte order mark as a column.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let check = Check { file: name };
    let root = yaml::parse(text, &YAML).map_err(|e| RuleError::Yaml {
        at: check.at(e.at),
        message: e.message,
    })?;
    let Some(root) = root else {
        return Ok(Vec::new());
    };
    if root.kind() == Some(yaml::Kind::Null) {
        return Ok(Vec::new());
    }
    let items = root
        .as_seq()
        .ok_or_else(|| check.wrong_type(&root, "a list of rules", "the rule file"))?;
    items.iter().map(|item| check.rule(item)).collect()
}

struct Check<'a> {
    file: &'a str,
}

/// The entry for `key`, if the mapping has it.
fn get<'n>(entries: &'n [Entry], key: &str) -> Option<&'n Entry> {
    entries.iter().find(|e| e.key == key)
}

/// The comparisons that apply to a field of type `ty`.
fn operators(ty: FieldType) -> &'static [&'static str] {
    match ty {
        FieldType::Text => &[
            "equals",
            "in",
            "matches",
            "contains",
            "starts_with",
            "ends_with",
        ],
        FieldType::Number => &["equals", "in", "gt", "gte", "lt", "lte"],
        FieldType::Bool => &["equals", "in"],
    }
}

/// How a value of type `ty` reads in "expected ...".
fn expected_value(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Text => "text",
        FieldType::Number => "a number",
        FieldType::Bool => "true or false",
    }
}

fn field_what(field: &str) -> String {
    format!("field {}", quote(field))
}

impl Check<'_> {
    fn at(&self, loc: Loc) -> Position {
        Position {
            file: self.file.to_owned(),
            line: loc.line,
            col: loc.col,
        }
    }

    fn wrong_type(&self, node: &Node, expected: &str, what: &str) -> RuleError {
        RuleError::WrongType {
            at: self.at(node.loc),
            expected: expected.to_owned(),
            what: what.to_owned(),
            found: node.describe(),
        }
    }

    fn invalid(&self, loc: Loc, message: impl Into<String>) -> RuleError {
        RuleError::Invalid {
            at: self.at(loc),
            message: message.into(),
        }
    }

    fn text<'n>(&self, node: &'n Node, what: &str) -> Result<&'n str, RuleError> {
        node.as_text()
            .ok_or_else(|| self.wrong_type(node, "text", what))
    }

    /// One item of the rule list.
    fn rule(&self, node: &Node) -> Result<(Rule, Position), RuleError> {
        let entries = node.as_map().ok_or_else(|| {
            self.wrong_type(node, "a mapping (a rule)", "an item of the rule list")
        })?;
        let named = get(entries, "id").and_then(|e| e.value.as_text());
        let context = named.map_or_else(|| "a rule".to_owned(), |id| format!("rule {}", quote(id)));
        if let Some(e) = entries
            .iter()
            .find(|e| !RULE_KEYS.contains(&e.key.as_str()))
        {
            return Err(RuleError::UnknownKey {
                at: self.at(e.key_loc),
                key: e.key.clone(),
                context,
                expected: RULE_KEYS.join(", "),
            });
        }
        let required = |key: &'static str| {
            get(entries, key).ok_or_else(|| RuleError::MissingKey {
                at: self.at(node.loc),
                key,
                context: context.clone(),
            })
        };

        let id_entry = required("id")?;
        let id = self.text(&id_entry.value, "\"id\"")?;
        let id_at = self.at(id_entry.value.loc);
        if !valid_id(id) {
            return Err(RuleError::BadId {
                at: id_at,
                id: id.to_owned(),
            });
        }

        let severity = required("severity")?;
        let severity = Severity::from_name(self.text(&severity.value, "\"severity\"")?)
            .ok_or_else(|| RuleError::BadSeverity {
                at: self.at(severity.value.loc),
                found: severity.value.as_text().unwrap_or_default().to_owned(),
            })?;

        let description = self.sentence(required("description")?)?;

        let on = required("on")?;
        let on_text = self.text(&on.value, "\"on\"")?;
        let kind = Kind::from_name(on_text).ok_or_else(|| RuleError::UnknownKind {
            at: self.at(on.value.loc),
            found: on_text.to_owned(),
        })?;

        let condition = self.condition(&required("when")?.value, kind)?;

        let action = match get(entries, "action") {
            None => Action::default(),
            Some(e) => {
                let text = self.text(&e.value, "\"action\"")?;
                Action::from_name(text).ok_or_else(|| RuleError::BadAction {
                    at: self.at(e.value.loc),
                    found: text.to_owned(),
                })?
            }
        };

        let reason = get(entries, "reason")
            .map(|e| self.sentence(e))
            .transpose()?;

        let rule = Rule {
            id: id.to_owned(),
            severity,
            description,
            reason,
            kind,
            action,
            condition,
            source: format!("{}:{}", self.file, node.loc.line),
        };
        Ok((rule, id_at))
    }

    /// Free text that must say something: `description` and `reason`.
    fn sentence(&self, entry: &Entry) -> Result<String, RuleError> {
        let what = format!("{:?}", entry.key);
        let text = self.text(&entry.value, &what)?.trim();
        if text.is_empty() {
            return Err(self.invalid(
                entry.value.loc,
                format!("empty {what} (expected a sentence)"),
            ));
        }
        Ok(text.to_owned())
    }

    /// A `when:` condition, or one nested in `all`, `any`, `not`.
    fn condition(&self, node: &Node, kind: Kind) -> Result<Condition, RuleError> {
        let entries = node.as_map().ok_or_else(|| {
            self.wrong_type(
                node,
                "a mapping of field names and all, any, not",
                "a condition",
            )
        })?;
        if entries.is_empty() {
            return Err(self.invalid(
                node.loc,
                "empty condition (expected at least one field name or all, any, not)",
            ));
        }
        let mut parts = Vec::with_capacity(entries.len());
        for entry in entries {
            let part = match entry.key.as_str() {
                combinator @ ("all" | "any") => {
                    let items = entry.value.as_seq().ok_or_else(|| {
                        self.wrong_type(
                            &entry.value,
                            "a list of conditions",
                            &format!("{combinator:?}"),
                        )
                    })?;
                    if items.is_empty() {
                        return Err(self.invalid(
                            entry.value.loc,
                            format!(
                                "empty list for {combinator:?} (expected at least one condition)"
                            ),
                        ));
                    }
                    let inner = items
                        .iter()
                        .map(|item| self.condition(item, kind))
                        .collect::<Result<Vec<_>, _>>()?;
                    if combinator == "all" {
                        Condition::All(inner)
                    } else {
                        Condition::Any(inner)
                    }
                }
                "not" => Condition::Not(Box::new(self.condition(&entry.value, kind)?)),
                name => {
                    let slot = kind.slot(name);
                    let field = slot.and_then(|i| kind.fields().get(i)).map(|(f, _)| *f);
                    let (Some(slot), Some(field), Some(ty)) = (slot, field, kind.field_type(name))
                    else {
                        let valid: Vec<&str> = kind.fields().iter().map(|(f, _)| *f).collect();
                        return Err(RuleError::UnknownField {
                            at: self.at(entry.key_loc),
                            field: name.to_owned(),
                            kind,
                            valid: valid.join(", "),
                        });
                    };
                    Condition::Field {
                        slot,
                        test: self.predicate(&entry.value, field, ty)?,
                    }
                }
            };
            parts.push(part);
        }
        Ok(match parts.len() {
            1 => parts.remove(0),
            _ => Condition::All(parts),
        })
    }

    /// What a field is compared with: a bare value or `{op: value}`.
    fn predicate(&self, node: &Node, field: &str, ty: FieldType) -> Result<Test, RuleError> {
        let ops = operators(ty);
        let Some(entries) = node.as_map() else {
            if node.as_seq().is_some() {
                return Err(self.wrong_type(
                    node,
                    &format!(
                        "a value or a mapping with one of {} (for a list, use in:)",
                        ops.join(", ")
                    ),
                    &field_what(field),
                ));
            }
            return self.equals(node, field, ty);
        };
        let (op, rest) = match entries {
            [] => {
                return Err(self.invalid(
                    node.loc,
                    format!(
                        "empty comparison for {} (expected a value or a mapping with one of {})",
                        field_what(field),
                        ops.join(", ")
                    ),
                ))
            }
            [op, rest @ ..] => (op, rest),
        };
        if let Some(second) = rest.first() {
            return Err(self.invalid(
                second.key_loc,
                format!(
                    "more than one comparison for {} (found {} and {}; expected exactly one, combine several with all: or any:)",
                    field_what(field),
                    quote(&op.key),
                    quote(&second.key)
                ),
            ));
        }
        let value = &op.value;
        let key = op.key.as_str();
        let all_ops = [
            "equals",
            "in",
            "matches",
            "contains",
            "starts_with",
            "ends_with",
            "gt",
            "gte",
            "lt",
            "lte",
        ];
        if !all_ops.contains(&key) {
            return Err(RuleError::UnknownKey {
                at: self.at(op.key_loc),
                key: key.to_owned(),
                context: format!("the comparison for {}", field_what(field)),
                expected: ops.join(", "),
            });
        }
        if !ops.contains(&key) {
            return Err(RuleError::WrongOperator {
                at: self.at(op.key_loc),
                op: key.to_owned(),
                field: field.to_owned(),
                field_type: ty,
                expected: ops.join(", "),
            });
        }
        match key {
            "equals" => self.equals(value, field, ty),
            "in" => self.one_of(value, field, ty),
            "matches" => {
                let pattern = self.text(value, &format!("\"matches\" of {}", field_what(field)))?;
                let regex = RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_DFA_LIMIT)
                    .build()
                    .map_err(|e| RuleError::BadRegex {
                        at: self.at(value.loc),
                        field: field.to_owned(),
                        message: regex_message(&e),
                    })?;
                Ok(Test::Matches(regex))
            }
            "contains" | "starts_with" | "ends_with" => {
                let what = format!("{key:?} of {}", field_what(field));
                let part = self.text(value, &what)?;
                if part.is_empty() {
                    return Err(self.invalid(
                        value.loc,
                        format!("empty text for {what} (it would match everything)"),
                    ));
                }
                let part = part.to_owned();
                Ok(match key {
                    "contains" => Test::Contains(part),
                    "starts_with" => Test::StartsWith(part),
                    _ => Test::EndsWith(part),
                })
            }
            _ => {
                let bound = self.number(value, &format!("{key:?} of {}", field_what(field)))?;
                Ok(match key {
                    "gt" => Test::Gt(bound),
                    "gte" => Test::Gte(bound),
                    "lt" => Test::Lt(bound),
                    _ => Test::Lte(bound),
                })
            }
        }
    }

    fn number(&self, node: &Node, what: &str) -> Result<f64, RuleError> {
        node.as_scalar()
            .and_then(yaml::number)
            .ok_or_else(|| self.wrong_type(node, "a number", what))
    }

    /// A single value of the field's type.
    fn value(&self, node: &Node, field: &str, ty: FieldType) -> Result<Value, RuleError> {
        let what = field_what(field);
        let value = match ty {
            FieldType::Text => node.as_text().map(|t| Value::Text(t.to_owned())),
            FieldType::Number => node.as_scalar().and_then(yaml::number).map(Value::Number),
            FieldType::Bool => node.as_scalar().and_then(yaml::boolean).map(Value::Bool),
        };
        value.ok_or_else(|| self.wrong_type(node, expected_value(ty), &what))
    }

    fn equals(&self, node: &Node, field: &str, ty: FieldType) -> Result<Test, RuleError> {
        Ok(match self.value(node, field, ty)? {
            Value::Text(t) => Test::TextIs(t),
            Value::Number(n) => Test::NumberIs(n),
            Value::Bool(b) => Test::BoolIs(b),
        })
    }

    fn one_of(&self, node: &Node, field: &str, ty: FieldType) -> Result<Test, RuleError> {
        let items = node.as_seq().ok_or_else(|| {
            self.wrong_type(
                node,
                &format!("a list of {}", expected_value(ty)),
                &format!("\"in\" of {}", field_what(field)),
            )
        })?;
        if items.is_empty() {
            return Err(self.invalid(
                node.loc,
                format!(
                    "empty list for \"in\" of {} (expected at least one value)",
                    field_what(field)
                ),
            ));
        }
        let values = items
            .iter()
            .map(|item| self.value(item, field, ty))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match ty {
            FieldType::Text => {
                let mut set: Vec<String> = values
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Text(t) => Some(t),
                        _ => None,
                    })
                    .collect();
                set.sort_unstable();
                set.dedup();
                Test::TextIn(set)
            }
            FieldType::Number => Test::NumberIn(
                values
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Number(n) => Some(n),
                        _ => None,
                    })
                    .collect(),
            ),
            FieldType::Bool => Test::BoolIn(
                values
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Bool(b) => Some(b),
                        _ => None,
                    })
                    .collect(),
            ),
        })
    }
}

/// `[a-z0-9][a-z0-9-]*`, at most [`MAX_ID_CHARS`] long.
fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && id.len() <= MAX_ID_CHARS
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The regex compiler's complaint on one line, lowercase, without the
/// pattern echo it prints above it.
fn regex_message(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("the compiled regex is larger than the limit of {limit} bytes (simplify the pattern)")
        }
        regex::Error::Syntax(text) => {
            let line = text
                .lines()
                .find_map(|l| l.trim_start().strip_prefix("error: "))
                .map_or_else(|| text.lines().collect::<Vec<_>>().join(" "), str::to_owned);
            line.trim_end_matches('.').to_owned()
        }
        other => other.to_string().trim_end_matches('.').to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "crypto-miner-binary", "0day", "a-", &"a".repeat(64)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a b", "é", &"a".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn regex_messages_are_one_line() {
        // Built at run time: clippy checks literal patterns.
        let unclosed = String::from("(");
        let e = regex::Regex::new(&unclosed).unwrap_err();
        assert_eq!(regex_message(&e), "unclosed group");
        let e = RegexBuilder::new(r"\w{1000}\w{1000}")
            .size_limit(1000)
            .build()
            .unwrap_err();
        assert!(regex_message(&e).starts_with("the compiled regex is larger"));
    }

    #[test]
    fn operators_per_type() {
        assert!(operators(FieldType::Text).contains(&"matches"));
        assert!(!operators(FieldType::Number).contains(&"matches"));
        assert!(operators(FieldType::Number).contains(&"gte"));
        assert_eq!(operators(FieldType::Bool), ["equals", "in"]);
    }
}
