//! A submission's options beside its image: `escalate` (always, auto, never) and `deadline_ms`,
//! as query parameters (every body form) or as fields of the JSON body (which win).

use std::time::Duration;

use serde_json::Value;
use tandem_core::escalation::Escalate;

use crate::error::ApiError;

/// The options as the request gave them, not yet checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptionParams {
    pub escalate: Option<String>,
    pub deadline_ms: Option<String>,
}

/// The checked options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOptions {
    pub escalate: Escalate,
    /// After submission: when the slow answer stops being wanted.
    pub deadline: Option<Duration>,
}

impl OptionParams {
    /// From the JSON body's fields (`"escalate": "auto"`, `"deadline_ms": 2000`).
    pub fn from_json(
        escalate: Option<Value>,
        deadline_ms: Option<Value>,
    ) -> Result<Self, ApiError> {
        let escalate = match escalate {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                return Err(ApiError::InvalidEscalate(format!(
                    "\"escalate\" must be \"always\", \"auto\" or \"never\", not {other}"
                )));
            }
        };
        let deadline_ms = match deadline_ms {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                return Err(ApiError::InvalidDeadline(format!(
                    "\"deadline_ms\" must be a whole number of milliseconds, not {other}"
                )));
            }
        };
        Ok(Self {
            escalate,
            deadline_ms,
        })
    }

    /// From the query string (`?escalate=auto&deadline_ms=2000`).
    pub fn from_query(query: Option<&str>) -> Self {
        let mut params = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "escalate" => params.escalate = Some(value.into_owned()),
                "deadline_ms" => params.deadline_ms = Some(value.into_owned()),
                _ => {}
            }
        }
        params
    }

    /// Each field from `self` when given there, else from `fallback`.
    pub fn or(self, fallback: Self) -> Self {
        Self {
            escalate: self.escalate.or(fallback.escalate),
            deadline_ms: self.deadline_ms.or(fallback.deadline_ms),
        }
    }

    /// Checks the values: `default` when no policy is given; a deadline from 1 ms to `longest`.
    pub fn check(self, default: Escalate, longest: Duration) -> Result<JobOptions, ApiError> {
        let escalate = match self.escalate {
            None => default,
            Some(text) => text
                .parse()
                .map_err(|e: tandem_core::escalation::InvalidEscalate| {
                    ApiError::InvalidEscalate(e.to_string())
                })?,
        };
        let deadline = match self.deadline_ms {
            None => None,
            Some(text) => Some(parse_deadline(&text, longest)?),
        };
        Ok(JobOptions { escalate, deadline })
    }
}

fn parse_deadline(text: &str, longest: Duration) -> Result<Duration, ApiError> {
    let longest_ms = u64::try_from(longest.as_millis()).unwrap_or(u64::MAX);
    match text.trim().parse::<u64>() {
        Ok(ms) if (1..=longest_ms).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(ApiError::InvalidDeadline(format!(
            "deadline_ms must be a whole number of milliseconds from 1 to {longest_ms} (the job \
             TTL), not {text:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn body_fields_win_over_query_parameters() {
        let body = OptionParams::from_json(Some("never".into()), None).unwrap();
        let query = OptionParams::from_query(Some("escalate=auto&deadline_ms=250"));
        let options = body.or(query).check(Escalate::Always, DAY).unwrap();
        assert_eq!(options.escalate, Escalate::Never);
        assert_eq!(options.deadline, Some(Duration::from_millis(250)));
        let none = OptionParams::default().check(Escalate::Auto, DAY).unwrap();
        assert_eq!((none.escalate, none.deadline), (Escalate::Auto, None));
    }

    #[test]
    fn bad_values_are_named() {
        let check = |q: &str| OptionParams::from_query(Some(q)).check(Escalate::Always, DAY);
        for bad in ["escalate=sometimes", "escalate=", "escalate=AUTO"] {
            assert!(
                matches!(check(bad), Err(ApiError::InvalidEscalate(_))),
                "{bad}"
            );
        }
        for bad in [
            "deadline_ms=-5",
            "deadline_ms=0",
            "deadline_ms=1.5",
            "deadline_ms=soon",
        ] {
            assert!(
                matches!(check(bad), Err(ApiError::InvalidDeadline(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            check("deadline_ms=86400001"),
            Err(ApiError::InvalidDeadline(_))
        ));
        let json = OptionParams::from_json(Some(Value::Bool(true)), None);
        assert!(matches!(json, Err(ApiError::InvalidEscalate(_))));
        let json = OptionParams::from_json(None, Some(Value::String("5".into())));
        assert!(matches!(json, Err(ApiError::InvalidDeadline(_))));
        let negative = OptionParams::from_json(None, Some(serde_json::json!(-1))).unwrap();
        assert!(matches!(
            negative.check(Escalate::Always, DAY),
            Err(ApiError::InvalidDeadline(_))
        ));
    }
}
