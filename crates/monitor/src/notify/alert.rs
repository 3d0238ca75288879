//! What a webhook receives and a command hook reads on its stdin.

use serde::{Deserialize, Serialize};

/// One alert, as delivered: JSON with these field names.
///
/// The engine fills it in; everything in it has already been through the
/// redactor, so it can leave the machine. A receiver checks `version`
/// before reading the rest: a change that is not backwards compatible
/// raises it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The schema version of this payload, [`Alert::VERSION`].
    pub version: u32,
    /// The run id.
    pub run: i64,
    /// The pipeline's name.
    pub pipeline: String,
    /// The job's name.
    pub job: String,
    /// The id of the rule that fired.
    pub rule: String,
    /// The rule's severity (`low`, `medium`, `high`, `critical`).
    pub severity: String,
    /// The rule's description: what it means and why it matters.
    pub description: String,
    /// What the runner did: `alert` or `kill`.
    pub action: String,
    /// One line saying what the job did, already redacted.
    pub summary: String,
    /// The observation's fields, already redacted.
    pub observation: serde_json::Value,
    /// When the rule fired, RFC 3339 in UTC.
    pub at: String,
}

impl Alert {
    /// The schema version this build writes.
    pub const VERSION: u32 = 1;

    /// The alert as the JSON bytes that are delivered.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self)
            .expect("an alert is strings, numbers and a json value, which always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            version: Alert::VERSION,
            run: 42,
            pipeline: "release".into(),
            job: "build".into(),
            rule: "exec-netcat".into(),
            severity: "high".into(),
            description: "a job ran netcat".into(),
            action: "kill".into(),
            summary: "path=/usr/bin/nc argv=nc -l 4444".into(),
            observation: serde_json::json!({"path": "/usr/bin/nc", "pid": 7}),
            at: "2025-01-02T03:04:05Z".into(),
        }
    }

    #[test]
    fn json_carries_the_version_and_round_trips() {
        let a = alert();
        let json: serde_json::Value =
            serde_json::from_slice(&a.to_json()).expect("alert json parses");
        assert_eq!(json["version"], 1);
        assert_eq!(json["rule"], "exec-netcat");
        assert_eq!(json["observation"]["pid"], 7);
        let back: Alert = serde_json::from_value(json).expect("alert json deserializes");
        assert_eq!(back, a);
    }
}
