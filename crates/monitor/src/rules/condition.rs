//! A rule's `when:` once loaded: a tree of field tests, type-checked and
//! with its regexes compiled, that evaluates without allocating.

use regex::Regex;

use crate::observation::{Observation, Value};

/// A condition over an observation's fields.
#[derive(Debug, Clone)]
pub(crate) enum Condition {
    /// Every one holds.
    All(Vec<Condition>),
    /// At least one holds.
    Any(Vec<Condition>),
    /// It does not hold.
    Not(Box<Condition>),
    /// The field is set and passes the test.
    Field {
        /// The field's place in its kind's fields (`Kind::slot`).
        slot: usize,
        /// The test, of the field's type.
        test: Test,
    },
}

/// One comparison of a field's value. Each variant only ever sees values
/// of the type it was built for; any other value fails it.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    /// Text equals.
    TextIs(String),
    /// Text is one of these (sorted, for a binary search).
    TextIn(Vec<String>),
    /// Text matches the regex somewhere.
    Matches(Regex),
    /// Text contains this.
    Contains(String),
    /// Text starts with this.
    StartsWith(String),
    /// Text ends with this.
    EndsWith(String),
    /// Number equals.
    NumberIs(f64),
    /// Number is one of these.
    NumberIn(Vec<f64>),
    /// Number is greater.
    Gt(f64),
    /// Number is greater or equal.
    Gte(f64),
    /// Number is less.
    Lt(f64),
    /// Number is less or equal.
    Lte(f64),
    /// Flag equals.
    BoolIs(bool),
    /// Flag is one of these.
    BoolIn(Vec<bool>),
}

impl Condition {
    /// Whether `obs` satisfies the condition. A field the observation does
    /// not have fails its test.
    pub(crate) fn holds(&self, obs: &Observation) -> bool {
        match self {
            Condition::All(parts) => parts.iter().all(|c| c.holds(obs)),
            Condition::Any(parts) => parts.iter().any(|c| c.holds(obs)),
            Condition::Not(inner) => !inner.holds(obs),
            Condition::Field { slot, test } => obs.at(*slot).is_some_and(|v| test.passes(v)),
        }
    }
}

impl Test {
    /// Whether `value` passes.
    pub(crate) fn passes(&self, value: &Value) -> bool {
        match (self, value) {
            (Test::TextIs(want), Value::Text(t)) => t == want,
            (Test::TextIn(set), Value::Text(t)) => {
                set.binary_search_by(|s| s.as_str().cmp(t)).is_ok()
            }
            (Test::Matches(re), Value::Text(t)) => re.is_match(t),
            (Test::Contains(part), Value::Text(t)) => t.contains(part.as_str()),
            (Test::StartsWith(part), Value::Text(t)) => t.starts_with(part.as_str()),
            (Test::EndsWith(part), Value::Text(t)) => t.ends_with(part.as_str()),
            // Exact comparison is what a rule means by `port: 3333`.
            #[allow(clippy::float_cmp)]
            (Test::NumberIs(want), Value::Number(n)) => n == want,
            #[allow(clippy::float_cmp)]
            (Test::NumberIn(set), Value::Number(n)) => set.iter().any(|s| s == n),
            (Test::Gt(bound), Value::Number(n)) => n > bound,
            (Test::Gte(bound), Value::Number(n)) => n >= bound,
            (Test::Lt(bound), Value::Number(n)) => n < bound,
            (Test::Lte(bound), Value::Number(n)) => n <= bound,
            (Test::BoolIs(want), Value::Bool(b)) => b == want,
            (Test::BoolIn(set), Value::Bool(b)) => set.contains(b),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::Kind;

    fn exec(argv: &str) -> Observation {
        Observation::new(Kind::Exec)
            .with("argv", argv)
            .with("pid", 7u64)
            .with("new_binary", false)
    }

    fn field(field: &'static str, test: Test) -> Condition {
        let slot = Kind::Exec.slot(field).expect("an exec field");
        Condition::Field { slot, test }
    }

    #[test]
    fn tests_compare_by_type() {
        let text = Value::from("nc -l 4444");
        assert!(Test::Contains("-l".into()).passes(&text));
        assert!(Test::StartsWith("nc ".into()).passes(&text));
        assert!(Test::EndsWith("4444".into()).passes(&text));
        assert!(Test::Matches(Regex::new(r"\d{4}$").unwrap()).passes(&text));
        assert!(Test::TextIn(vec!["a".into(), "nc -l 4444".into()]).passes(&text));
        assert!(!Test::TextIs("nc".into()).passes(&text));
        let n = Value::from(30u64);
        assert!(Test::Gte(30.0).passes(&n) && !Test::Gt(30.0).passes(&n));
        assert!(Test::Lte(30.0).passes(&n) && !Test::Lt(30.0).passes(&n));
        assert!(Test::NumberIn(vec![1.0, 30.0]).passes(&n));
        assert!(Test::BoolIs(false).passes(&Value::Bool(false)));
        assert!(Test::BoolIn(vec![true]).passes(&Value::Bool(true)));
        // A value of another type fails, it does not panic or coerce.
        assert!(!Test::Gte(0.0).passes(&text));
        assert!(!Test::TextIs("30".into()).passes(&n));
        assert!(!Test::Gt(f64::NAN).passes(&n));
    }

    #[test]
    fn combinators_and_missing_fields() {
        let obs = exec("nc -l 4444");
        let has_l = field("argv", Test::Contains("-l".into()));
        let no_path = field("path", Test::Contains("/".into()));
        assert!(has_l.holds(&obs));
        assert!(!no_path.holds(&obs), "a missing field fails its test");
        assert!(Condition::Not(Box::new(no_path.clone())).holds(&obs));
        assert!(!Condition::All(vec![has_l.clone(), no_path.clone()]).holds(&obs));
        assert!(Condition::Any(vec![no_path, has_l]).holds(&obs));
    }
}
