//! Detection rules: YAML data files that turn observations into alerts.
//!
//! A rule file is a list of rules; each rule names the kind of observation
//! it looks at (`on:`), a condition over that kind's fields (`when:`), a
//! severity and an action. The grammar is described in `docs/RULES.md`;
//! the shipped rules are in `resources/rules/` and embedded in the binary.
//!
//! ```
//! use monitor::{Kind, Observation, Rules};
//!
//! let rules = Rules::load(&[(
//!     "ops.yaml",
//!     "- id: no-telnet\n  severity: high\n  description: telnet ran\n  on: exec\n  when: { binary: telnet }\n",
//! )])?;
//! let obs = Observation::new(Kind::Exec).with("binary", "telnet");
//! let ids: Vec<&str> = rules.evaluate(&obs).map(|r| r.id()).collect();
//! assert_eq!(ids, ["no-telnet"]);
//! # Ok::<(), monitor::RuleError>(())
//! ```
//!
//! Loading is strict: unknown keys, fields the kind does not have,
//! comparisons that do not fit the field's type, bad regexes and duplicate
//! ids are errors naming `file:line:col`, so that a typo cannot silently
//! disable a rule. Evaluation only looks at the rules of the observation's
//! kind and allocates nothing.

mod condition;
mod error;
mod parse;

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::observation::{Kind, Observation};
use condition::Condition;
pub use error::{Position, RuleError};

/// Largest rule file accepted, in bytes (1 MiB).
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// Longest rule id, in characters.
pub const MAX_ID_CHARS: usize = 64;

/// The shipped rule files, by their path in the repository.
const BUILTIN: &[(&str, &str)] = &[
    (
        "resources/rules/mining.yaml",
        include_str!("../../../../resources/rules/mining.yaml"),
    ),
    (
        "resources/rules/shells.yaml",
        include_str!("../../../../resources/rules/shells.yaml"),
    ),
    (
        "resources/rules/process.yaml",
        include_str!("../../../../resources/rules/process.yaml"),
    ),
    (
        "resources/rules/access.yaml",
        include_str!("../../../../resources/rules/access.yaml"),
    ),
    (
        "resources/rules/network.yaml",
        include_str!("../../../../resources/rules/network.yaml"),
    ),
    (
        "resources/rules/resources.yaml",
        include_str!("../../../../resources/rules/resources.yaml"),
    ),
    (
        "resources/rules/baseline.yaml",
        include_str!("../../../../resources/rules/baseline.yaml"),
    ),
];

/// How bad a rule's finding is. Ordered: `Info < Low < ... < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth recording.
    Info,
    /// Worth a look when convenient.
    Low,
    /// Unusual for a build; look soon.
    Medium,
    /// Likely an attack or a compromised dependency.
    High,
    /// An attack in progress.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The name rule files use for it.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The severity named `name`.
    pub fn from_name(name: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens when a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Raise an alert; the job goes on.
    #[default]
    Alert,
    /// Raise an alert and kill the job.
    Kill,
}

impl Action {
    /// The name rule files use for it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Kill => "kill",
        }
    }

    /// The action named `name`.
    pub fn from_name(name: &str) -> Option<Action> {
        [Action::Alert, Action::Kill]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One detection rule, loaded and checked.
#[derive(Debug, Clone)]
pub struct Rule {
    id: String,
    severity: Severity,
    description: String,
    reason: Option<String>,
    kind: Kind,
    action: Action,
    condition: Condition,
    source: String,
}

impl Rule {
    /// Its id, unique among the loaded rules.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How bad its finding is.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// What it catches, for the alert.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Why it exists, if the file says.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The kind of observation it looks at.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// What to do when it fires.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Where it is defined, as `file:line`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it fires on `obs`: same kind, and the condition holds.
    pub fn matches(&self, obs: &Observation) -> bool {
        obs.kind == self.kind && self.condition.holds(obs)
    }
}

/// A set of loaded rules, indexed by the kind they look at.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// In load order: file by file, rule by rule.
    rules: Vec<Rule>,
    /// For each kind (by [`slot`]), the indices of its rules.
    by_kind: [Vec<usize>; Kind::ALL.len()],
}

/// The index of `kind` in [`Rules::by_kind`].
fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Exec => 0,
        Kind::Egress => 1,
        Kind::Sample => 2,
        Kind::Limit => 3,
        Kind::File => 4,
    }
}

impl Rules {
    /// Loads rule files given as `(name, text)`: `name` is used in
    /// messages and in each rule's [`Rule::source`]. Ids must be unique
    /// across all the files.
    pub fn load(sources: &[(&str, &str)]) -> Result<Rules, RuleError> {
        let mut rules = Rules::default();
        let mut seen: HashMap<String, error::Position> = HashMap::new();
        for (name, text) in sources {
            for (rule, at) in parse::file(name, text)? {
                if let Some(first) = seen.get(&rule.id) {
                    return Err(RuleError::DuplicateId {
                        at,
                        id: rule.id,
                        first: first.clone(),
                    });
                }
                seen.insert(rule.id.clone(), at);
                if let Some(list) = rules.by_kind.get_mut(slot(rule.kind)) {
                    list.push(rules.rules.len());
                }
                rules.rules.push(rule);
            }
        }
        Ok(rules)
    }

    /// The shipped rules (`resources/rules/*.yaml`, embedded at build
    /// time).
    pub fn builtin() -> Rules {
        Rules::load(BUILTIN).expect("the shipped rules load (tested by builtin_rules_load)")
    }

    /// The shipped rules plus every `*.yaml` file of the operator's
    /// directory `dir`, in file name order. Files whose name starts with
    /// `.` are skipped (editor leftovers); a file over [`MAX_FILE_SIZE`],
    /// not UTF-8 or unreadable is an error, as is an id that a shipped rule
    /// already has.
    pub fn with_dir(dir: &Path) -> Result<Rules, RuleError> {
        let files = read_dir(dir)?;
        let mut sources: Vec<(&str, &str)> = BUILTIN.to_vec();
        sources.extend(files.iter().map(|(n, t)| (n.as_str(), t.as_str())));
        Rules::load(&sources)
    }

    /// Every rule, in load order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule with id `id`.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// The rules that fire on `obs`, in load order.
    ///
    /// Only the rules of `obs.kind` are looked at, and nothing is
    /// allocated: this runs for every exec of a job.
    pub fn evaluate<'a>(&'a self, obs: &'a Observation) -> impl Iterator<Item = &'a Rule> + 'a {
        let indices = self
            .by_kind
            .get(slot(obs.kind))
            .map_or(&[][..], Vec::as_slice);
        indices
            .iter()
            .filter_map(|&i| self.rules.get(i))
            .filter(move |rule| rule.condition.holds(obs))
    }
}

/// Reads every `*.yaml` file of `dir` (not starting with `.`), sorted by
/// name, as `(path, text)`.
fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, RuleError> {
    let read_err = |file: &Path, source| RuleError::Read {
        file: file.display().to_string(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
        let entry = entry.map_err(|e| read_err(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.ends_with(".yaml") && !name.starts_with('.') {
            paths.push(entry.path());
        }
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let name = path.display().to_string();
        let file = std::fs::File::open(&path).map_err(|e| read_err(&path, e))?;
        // Read at most one byte past the limit: the file may grow.
        let mut bytes = Vec::new();
        file.take(MAX_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read_err(&path, e))?;
        let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if size > MAX_FILE_SIZE {
            return Err(RuleError::TooLarge { file: name, size });
        }
        let text = String::from_utf8(bytes).map_err(|e| not_utf8(&name, &e))?;
        files.push((name, text));
    }
    Ok(files)
}

/// The error for a file that is not UTF-8, at the first bad byte.
fn not_utf8(name: &str, e: &std::string::FromUtf8Error) -> RuleError {
    let valid = e
        .as_bytes()
        .get(..e.utf8_error().valid_up_to())
        .unwrap_or_default();
    let before = String::from_utf8_lossy(valid);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    RuleError::Yaml {
        at: Position {
            file: name.to_owned(),
            line,
            col,
        },
        message: "rule file is not valid UTF-8 (expected UTF-8 text)".to_owned(),
    }
}

#[cfg(test)]
mod tests;
