//! The `Prefer` request header (RFC 7240), of which the gateway honours one preference:
//! `wait=<seconds>` (`POST /predict` and `GET /job/<id>` wait that long, at most
//! `TANDEM_MAX_WAIT_SECS`, for the job to become final).
//!
//! RFC 7240: preferences are comma-separated, each `token [= word] *(; parameter)`, names are
//! case-insensitive, a value may be a quoted string, and only the first instance of a
//! preference counts. Preferences the gateway does not know (`respond-async`, `return=...`)
//! are ignored, as the RFC says. `wait` takes RFC 7240's `delta-seconds` and, beyond it, a
//! decimal fraction (`wait=0.5`); a `wait` whose value is anything else (`wait=abc`,
//! `wait=-1`, `wait=1e3`, `wait` alone) is refused with 400 `invalid_prefer`: a client that
//! asked to wait and silently did not would read an unfinished job as if it were the answer.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

use crate::error::ApiError;

/// The request header.
pub const PREFER: &str = "prefer";
/// The response header saying which preference was honoured.
pub const PREFERENCE_APPLIED: &str = "preference-applied";

/// A `wait` preference as the gateway applies it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wait {
    /// min(requested, `TANDEM_MAX_WAIT_SECS`), in seconds.
    seconds: f64,
}

impl Wait {
    /// How long to wait.
    pub fn duration(self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }

    /// `Preference-Applied: wait=<seconds waited at most>`.
    pub fn applied(self) -> HeaderValue {
        // Digits and a dot only: always a valid header value.
        HeaderValue::from_str(&format!("wait={}", self.seconds))
            .unwrap_or_else(|_| HeaderValue::from_static("wait"))
    }
}

/// The request's `wait` preference, capped at `max`; `None` when there is none, or when
/// waiting is off (`max` is zero).
pub fn wait(headers: &HeaderMap, max: Duration) -> Result<Option<Wait>, ApiError> {
    let Some(raw) = find(headers, "wait")? else {
        return Ok(None);
    };
    let seconds = parse_seconds(raw.as_deref()).ok_or_else(|| {
        ApiError::InvalidPrefer(format!(
            "wait must be a number of seconds, such as wait=5 or wait=0.5; got {:?}",
            raw.unwrap_or_default()
        ))
    })?;
    if max.is_zero() {
        return Ok(None);
    }
    Ok(Some(Wait {
        seconds: seconds.min(max.as_secs_f64()),
    }))
}

/// `digits [. digits]`: RFC 7240's delta-seconds, or a decimal fraction of seconds.
fn parse_seconds(value: Option<&str>) -> Option<f64> {
    let value = value?;
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || value.ends_with('.') {
        return None;
    }
    // Long strings of digits are a number all the same; capped by the caller.
    value.parse::<f64>().ok().filter(|s| s.is_finite())
}

/// The value of the first preference named `name` in every `Prefer` header: `Some(None)` for
/// one without a value. A header that is not text is refused.
fn find(headers: &HeaderMap, name: &str) -> Result<Option<Option<String>>, ApiError> {
    for header in headers.get_all(PREFER) {
        let text = header.to_str().map_err(|_| {
            ApiError::InvalidPrefer("the Prefer header must be visible ASCII".into())
        })?;
        for preference in split_outside_quotes(text, ',') {
            // The preference itself is what comes before its first `;` parameter.
            let head = split_outside_quotes(preference, ';')
                .next()
                .unwrap_or_default();
            let (token, value) = match head.split_once('=') {
                Some((token, value)) => (token.trim(), Some(unquote(value.trim()))),
                None => (head.trim(), None),
            };
            if token.eq_ignore_ascii_case(name) {
                return Ok(Some(value));
            }
        }
    }
    Ok(None)
}

/// Splits on `separator` where it is not inside a quoted string.
fn split_outside_quotes(text: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty())
}

/// A `word`: a token as it is, a quoted string without its quotes and escapes.
fn unquote(word: &str) -> String {
    match word
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or('\\')
                } else {
                    c
                });
            }
            out
        }
        None => word.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(60);

    fn prefer(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(PREFER, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn seconds(values: &[&str]) -> Option<f64> {
        wait(&prefer(values), MAX).unwrap().map(|w| w.seconds)
    }

    #[test]
    fn reads_wait_among_other_preferences() {
        assert_eq!(seconds(&["wait=10"]), Some(10.0));
        assert_eq!(seconds(&["WAIT = 0.01"]), Some(0.01));
        assert_eq!(seconds(&["respond-async, wait=5"]), Some(5.0));
        assert_eq!(
            seconds(&["return=minimal; foo=\"a,b\", wait=\"7\""]),
            Some(7.0)
        );
        assert_eq!(seconds(&["respond-async", "wait=3;x=1"]), Some(3.0));
        // Only the first instance counts.
        assert_eq!(seconds(&["wait=2, wait=abc"]), Some(2.0));
        assert_eq!(seconds(&["respond-async"]), None);
        assert_eq!(seconds(&[]), None);
    }

    #[test]
    fn caps_at_the_maximum_and_says_so() {
        let applied = wait(&prefer(&["wait=600"]), MAX).unwrap().unwrap();
        assert_eq!(applied.duration(), MAX);
        assert_eq!(applied.applied(), "wait=60");
        let small = wait(&prefer(&["wait=0.01"]), MAX).unwrap().unwrap();
        assert_eq!(small.applied(), "wait=0.01");
        assert_eq!(wait(&prefer(&["wait=5"]), Duration::ZERO).unwrap(), None);
    }

    #[test]
    fn refuses_a_wait_that_is_not_a_number_of_seconds() {
        for bad in [
            "wait=abc",
            "wait=-1",
            "wait=1e3",
            "wait",
            "wait=",
            "wait=.5",
            "wait=5.",
            "wait=inf",
            "wait=NaN",
            "wait=1.2.3",
            "wait=\"\"",
        ] {
            let error = wait(&prefer(&[bad]), MAX).unwrap_err();
            assert_eq!(error.code(), "invalid_prefer", "{bad}");
        }
    }
}
