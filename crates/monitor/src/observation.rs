//! What the monitor looks at: one thing a job did, as named fields.
//!
//! Rules name fields (`binary`, `argv`, `host`, ...), so an observation is
//! a kind plus a value for some of its fields. The fields of each kind are
//! listed in [`Kind::fields`]; a rule that names any other field is refused
//! when it is loaded, so a typo cannot silently disable a rule. A loaded
//! rule refers to a field by its place in that list (its slot), so that
//! evaluating it compares no field names.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

/// The kinds of observation, and what a rule's `on:` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A process of the job called execve.
    Exec,
    /// A connection, DNS query or direct attempt of the job's network.
    Egress,
    /// A once-a-second sample of the job's cgroup.
    Sample,
    /// The kernel enforced a limit (OOM kill, refused fork).
    Limit,
    /// A file the job created or changed in its workspace (at job end).
    File,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 5] = [
        Kind::Exec,
        Kind::Egress,
        Kind::Sample,
        Kind::Limit,
        Kind::File,
    ];

    /// The name rules use for it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Egress => "egress",
            Kind::Sample => "sample",
            Kind::Limit => "limit",
            Kind::File => "file",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The fields an observation of this kind has, with what each holds.
    pub fn fields(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Exec => &[
                ("pid", "number: the process id inside the job"),
                ("ppid", "number: its parent's id inside the job"),
                ("uid", "number: its user id inside the job"),
                ("path", "text: the path the job executed, inside the job (as it named it: /bin/sh, not the binary it links to)"),
                ("binary", "text: the file name of that path"),
                ("argv", "text: the arguments joined by spaces, redacted"),
                ("parent", "text: the parent's executable file name"),
                ("new_binary", "bool: the path was never executed in an earlier clean run of this job (false while the job has no baseline)"),
            ],
            Kind::Egress => &[
                ("kind", "text: http, connect, dns or direct"),
                ("host", "text: the host the job asked for, redacted"),
                ("port", "number: the port it asked for"),
                ("addr", "text: the address connected to or resolved, or empty"),
                ("endpoint", "text: host:port"),
                ("allowed", "bool: the allowlist let it through"),
                ("detail", "text: the rule that allowed it, or why it was denied"),
                ("new_endpoint", "bool: an allowed endpoint never used in an earlier clean run of this job (false while the job has no baseline)"),
            ],
            Kind::Sample => &[
                ("cpu_pct", "number: CPU used in the last interval, in percent of the job's quota (of one core without a quota)"),
                ("memory_bytes", "number: memory in use"),
                ("memory_pct", "number: memory in use, in percent of the limit (0 without a limit)"),
                ("pids", "number: processes and threads"),
                ("pids_pct", "number: processes and threads, in percent of the limit (0 without a limit)"),
                ("io_read_bytes", "number: bytes read from block devices so far"),
                ("io_write_bytes", "number: bytes written to block devices so far"),
                ("busy_secs", "number: seconds in a row the job used at least 90% of its CPU quota"),
                ("quiet_secs", "number: seconds since the job last wrote output"),
            ],
            Kind::Limit => &[
                ("limit", "text: memory or pids"),
                ("count", "number: how many times the kernel enforced it in this step"),
            ],
            Kind::File => &[
                ("path", "text: the path inside the job"),
                ("change", "text: created or modified"),
                ("size", "number: its size in bytes"),
                ("executable", "bool: it has an execute bit"),
            ],
        }
    }

    /// Whether observations of this kind have `field`.
    pub fn has_field(self, field: &str) -> bool {
        self.slot(field).is_some()
    }

    /// The place of `field` in [`Kind::fields`].
    pub(crate) fn slot(self, field: &str) -> Option<usize> {
        self.fields().iter().position(|(name, _)| *name == field)
    }

    /// The type of `field`'s values, or `None` if this kind has no such
    /// field. Read from the first word of its description in
    /// [`Kind::fields`] (`text:`, `number:` or `bool:`).
    pub fn field_type(self, field: &str) -> Option<FieldType> {
        let (_, description) = self.fields().iter().find(|(name, _)| *name == field)?;
        let (word, _) = description.split_once(':')?;
        FieldType::from_name(word)
    }
}

/// The type of a field's values: which [`Value`] variant it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// [`Value::Text`].
    Text,
    /// [`Value::Number`].
    Number,
    /// [`Value::Bool`].
    Bool,
}

impl FieldType {
    /// The word the field descriptions start with.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "number",
            FieldType::Bool => "bool",
        }
    }

    /// The type named `name`.
    pub fn from_name(name: &str) -> Option<FieldType> {
        [FieldType::Text, FieldType::Number, FieldType::Bool]
            .into_iter()
            .find(|t| t.name() == name)
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A field's value.
///
/// In JSON a whole number is an integer and any other number a string
/// (`"12.5"`): alerts go into the audit log, whose canonical JSON has no
/// floating-point numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Text(String),
    /// A number.
    Number(f64),
    /// A flag.
    Bool(bool),
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// Whole numbers up to 2^53 are exact in an f64.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        match self {
            Value::Text(t) => s.serialize_str(t),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) if n.fract() == 0.0 && n.abs() <= EXACT => {
                // Checked above: whole and within i64.
                #[allow(clippy::cast_possible_truncation)]
                s.serialize_i64(*n as i64)
            }
            Value::Number(n) => s.collect_str(n),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        // Precision beyond 2^53 does not matter for a rule's threshold.
        #[allow(clippy::cast_precision_loss)]
        Value::Number(n as f64)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        #[allow(clippy::cast_precision_loss)]
        Value::Number(n as f64)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Value {
        Value::Number(n)
    }
}

/// One thing a job did.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// What kind of thing.
    pub kind: Kind,
    /// Its fields' values, by slot: `values[i]` is the value of
    /// `kind.fields()[i]`, `None` where it is not set.
    values: Vec<Option<Value>>,
}

impl Observation {
    /// An observation of `kind` with no fields yet.
    pub fn new(kind: Kind) -> Observation {
        Observation {
            kind,
            values: vec![None; kind.fields().len()],
        }
    }

    /// Sets `field` (one of [`Kind::fields`]; any other name is ignored).
    pub fn with(mut self, field: &'static str, value: impl Into<Value>) -> Observation {
        debug_assert!(
            self.kind.has_field(field),
            "{} has no field {field}",
            self.kind
        );
        if let Some(slot) = self.kind.slot(field).and_then(|i| self.values.get_mut(i)) {
            *slot = Some(value.into());
        }
        self
    }

    /// The value of `field`, if set.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.at(self.kind.slot(field)?)
    }

    /// The value of the field in `slot` (see [`Kind::slot`]), if set.
    pub(crate) fn at(&self, slot: usize) -> Option<&Value> {
        self.values.get(slot)?.as_ref()
    }

    /// The fields that are set, with their values, by name.
    pub fn fields(&self) -> BTreeMap<&'static str, &Value> {
        self.kind
            .fields()
            .iter()
            .zip(&self.values)
            .filter_map(|((name, _), value)| Some((*name, value.as_ref()?)))
            .collect()
    }

    /// A one-line summary for an alert: the fields that say most.
    pub fn summary(&self) -> String {
        let keys: &[&str] = match self.kind {
            Kind::Exec => &["path", "argv"],
            Kind::Egress => &["kind", "endpoint", "detail"],
            Kind::Sample => &["cpu_pct", "memory_pct", "pids", "busy_secs", "quiet_secs"],
            Kind::Limit => &["limit", "count"],
            Kind::File => &["path", "change", "size"],
        };
        let mut parts = Vec::new();
        for key in keys {
            match self.get(key) {
                Some(Value::Text(t)) => parts.push(format!("{key}={}", clip(t, MAX_SUMMARY_FIELD))),
                Some(Value::Number(n)) => parts.push(format!("{key}={n}")),
                Some(Value::Bool(b)) => parts.push(format!("{key}={b}")),
                None => {}
            }
        }
        parts.join(" ")
    }
}

/// Most bytes of one field an alert's summary shows: a job can give a
/// process megabytes of arguments, and each alert is kept in the run
/// record and the audit log and sent to every alert sink. The rules see
/// the whole field.
pub const MAX_SUMMARY_FIELD: usize = 1024;

/// `text` cut to at most `max` bytes (at a character boundary), with how
/// long it was when it was longer.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// As `{"kind": ..., "fields": {name: value, ...}}`, the fields by name.
impl Serialize for Observation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("Observation", 2)?;
        out.serialize_field("kind", &self.kind)?;
        out.serialize_field("fields", &self.fields())?;
        out.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_whole_characters_and_says_how_long_the_text_was() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdef", 4), "abcd… (6 bytes in all)");
        // 'é' is two bytes: a cut inside it steps back before it.
        assert_eq!(clip("aé", 2), "a… (3 bytes in all)");
        let obs = Observation::new(Kind::Exec)
            .with("path", "/bin/x")
            .with("argv", "a".repeat(5000));
        let summary = obs.summary();
        assert!(summary.len() < MAX_SUMMARY_FIELD + 64, "{}", summary.len());
        assert!(summary.ends_with("(5000 bytes in all)"), "{summary}");
    }

    #[test]
    fn numbers_serialize_without_floats() {
        let json = |v: Value| serde_json::to_string(&v).expect("serialize");
        assert_eq!(json(Value::from(42u64)), "42");
        assert_eq!(json(Value::Number(-3.0)), "-3");
        assert_eq!(json(Value::Number(12.5)), "\"12.5\"");
        assert_eq!(json(Value::Number(f64::NAN)), "\"NaN\"");
        assert!(json(Value::Number(1e300)).starts_with("\"1000"));
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_name("execve"), None);
    }

    #[test]
    fn every_field_has_a_type() {
        for kind in Kind::ALL {
            for (name, description) in kind.fields() {
                assert!(
                    kind.field_type(name).is_some(),
                    "{kind}.{name}: description must start with text:, number: or bool: ({description})"
                );
            }
            assert_eq!(kind.field_type("no_such_field"), None);
        }
        assert_eq!(Kind::Egress.field_type("port"), Some(FieldType::Number));
        assert_eq!(Kind::Egress.field_type("host"), Some(FieldType::Text));
        assert_eq!(Kind::Egress.field_type("allowed"), Some(FieldType::Bool));
    }

    #[test]
    fn json_names_the_set_fields_in_order() {
        // The shape the derived Serialize of the map-based observation had:
        // the kind, then the set fields by name, sorted; unset ones absent.
        let o = Observation::new(Kind::Egress)
            .with("port", 443u64)
            .with("host", "example.org")
            .with("allowed", false);
        assert_eq!(
            serde_json::to_string(&o).expect("serialize"),
            r#"{"kind":"egress","fields":{"allowed":false,"host":"example.org","port":443}}"#
        );
        assert_eq!(o.get("port"), Some(&Value::Number(443.0)));
        assert_eq!(o.get("addr"), None);
        assert_eq!(o.get("no_such_field"), None);
    }

    #[test]
    fn summary_names_the_telling_fields() {
        let o = Observation::new(Kind::Exec)
            .with("path", "/usr/bin/nc")
            .with("argv", "nc -l 4444")
            .with("pid", 7u64);
        assert_eq!(o.summary(), "path=/usr/bin/nc argv=nc -l 4444");
    }
}
