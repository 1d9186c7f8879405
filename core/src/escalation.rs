//! Escalation: whether a job goes on to the slow model, and the thresholds that decide it.
//!
//! `always` (the original behaviour) sends every job to the slow model, `never` none, and `auto`
//! only those whose fast top-1 score is below a threshold: one global value, or one per class
//! from a thresholds file that `tandem calibrate` writes (see the README, "Escalation").

use std::{collections::BTreeMap, fmt, path::Path, str::FromStr};

use serde::{Deserialize, Serialize};

/// A request's escalation policy (`escalate=` on `POST /predict`; default `TANDEM_ESCALATE`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Escalate {
    /// Every job goes to the slow model.
    #[default]
    Always,
    /// Only jobs whose fast score is below the threshold.
    Auto,
    /// No job goes to the slow model: the fast answer is final.
    Never,
}

impl Escalate {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Auto => "auto",
            Self::Never => "never",
        }
    }
}

impl fmt::Display for Escalate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that is not an escalation policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("escalate must be always, auto or never, not {0:?}")]
pub struct InvalidEscalate(pub String);

impl FromStr for Escalate {
    type Err = InvalidEscalate;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Self::Always),
            "auto" => Ok(Self::Auto),
            "never" => Ok(Self::Never),
            other => Err(InvalidEscalate(other.to_owned())),
        }
    }
}

/// Which answer a job's final label is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DecidedBy {
    /// The fast model's: not escalated, or the deadline passed before the slow answer.
    Fast,
    /// The slow model's (once there is one).
    Slow,
}

/// Why a job was, or was not, escalated (in the job record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EscalationDecision {
    /// The policy the request asked for.
    pub policy: Escalate,
    /// The fast model's top-1 score.
    pub score: f32,
    /// The threshold it was compared with (`auto` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Whether the brownout threshold applied (the slow path's expected wait was too long).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub brownout: bool,
    /// For people: e.g. "fast score 0.94 >= threshold 0.90".
    pub reason: String,
}

/// What a thresholds file holds: a global threshold and per-class ones (by label).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// The fast model the thresholds were calibrated for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_model: Option<String>,
    /// The slow model whose answers they were measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_model: Option<String>,
    /// The agreement they were chosen for (`tandem calibrate --target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_agreement: Option<f64>,
    /// Used for every class without a threshold of its own.
    pub global: f32,
    /// Thresholds by the fast model's top-1 label.
    #[serde(default)]
    pub per_class: BTreeMap<String, f32>,
}

/// Why a thresholds file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ThresholdsError {
    #[error("cannot read thresholds file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("thresholds file {path} is not valid: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("thresholds file {path}: {what} is {value}, outside [0, 1]")]
    OutOfRange {
        path: String,
        what: String,
        value: f32,
    },
}

impl Thresholds {
    /// One threshold for every class.
    pub fn global(threshold: f32) -> Self {
        Self {
            fast_model: None,
            slow_model: None,
            target_agreement: None,
            global: threshold,
            per_class: BTreeMap::new(),
        }
    }

    /// The threshold for a fast top-1 `label`.
    pub fn for_label(&self, label: &str) -> f32 {
        self.per_class.get(label).copied().unwrap_or(self.global)
    }

    /// Reads and checks a thresholds file (JSON, as `tandem calibrate` writes it).
    pub fn load(path: &Path) -> Result<Self, ThresholdsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ThresholdsError::Read {
            path: shown.clone(),
            source,
        })?;
        let thresholds: Self =
            serde_json::from_str(&text).map_err(|source| ThresholdsError::Parse {
                path: shown.clone(),
                source,
            })?;
        thresholds.check(&shown)?;
        Ok(thresholds)
    }

    fn check(&self, path: &str) -> Result<(), ThresholdsError> {
        let values = std::iter::once(("global".to_owned(), self.global)).chain(
            self.per_class
                .iter()
                .map(|(label, value)| (format!("per_class[{label:?}]"), *value)),
        );
        for (what, value) in values {
            if !(0.0..=1.0).contains(&value) {
                return Err(ThresholdsError::OutOfRange {
                    path: path.to_owned(),
                    what,
                    value,
                });
            }
        }
        Ok(())
    }

    /// The file's text (pretty JSON, a trailing newline).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// Decides one job: `threshold` is the one that applies now (brownout included) for `auto`.
pub fn decide(
    policy: Escalate,
    score: f32,
    threshold: f32,
    brownout: bool,
) -> (bool, EscalationDecision) {
    let (escalated, threshold, reason) = match policy {
        Escalate::Always => (true, None, "escalate=always".to_owned()),
        Escalate::Never => (false, None, "escalate=never".to_owned()),
        Escalate::Auto if score >= threshold => (
            false,
            Some(threshold),
            format!("fast score {score:.3} >= threshold {threshold:.3}"),
        ),
        Escalate::Auto => (
            true,
            Some(threshold),
            format!("fast score {score:.3} < threshold {threshold:.3}"),
        ),
    };
    let decision = EscalationDecision {
        policy,
        score,
        threshold,
        brownout: brownout && policy == Escalate::Auto,
        reason,
    };
    (escalated, decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_by_name_only() {
        assert_eq!("auto".parse(), Ok(Escalate::Auto));
        assert_eq!("never".parse(), Ok(Escalate::Never));
        assert_eq!("always".parse(), Ok(Escalate::Always));
        assert!("sometimes".parse::<Escalate>().is_err());
        assert!("Auto".parse::<Escalate>().is_err());
    }

    #[test]
    fn auto_escalates_below_the_threshold_only() {
        assert!(!decide(Escalate::Auto, 0.94, 0.9, false).0);
        assert!(decide(Escalate::Auto, 0.4, 0.9, false).0);
        assert!(decide(Escalate::Always, 0.99, 0.9, false).0);
        assert!(!decide(Escalate::Never, 0.01, 0.9, false).0);
        let (_, decision) = decide(Escalate::Auto, 0.94, 0.9, true);
        assert_eq!(decision.threshold, Some(0.9));
        assert!(decision.brownout);
        assert!(!decide(Escalate::Always, 0.5, 0.9, true).1.brownout);
    }

    #[test]
    fn thresholds_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        let mut thresholds = Thresholds::global(0.7);
        thresholds.per_class.insert("espresso".into(), 0.5);
        std::fs::write(&good, thresholds.to_json()).unwrap();
        let read = Thresholds::load(&good).unwrap();
        assert_eq!(read.for_label("espresso"), 0.5);
        assert_eq!(read.for_label("tabby"), 0.7);

        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{not json").unwrap();
        assert!(matches!(
            Thresholds::load(&broken),
            Err(ThresholdsError::Parse { .. })
        ));
        let out = dir.path().join("out.json");
        std::fs::write(&out, r#"{"global": 1.5}"#).unwrap();
        assert!(matches!(
            Thresholds::load(&out),
            Err(ThresholdsError::OutOfRange { .. })
        ));
        let missing = dir.path().join("missing.json");
        assert!(matches!(
            Thresholds::load(&missing),
            Err(ThresholdsError::Read { .. })
        ));
    }
}
