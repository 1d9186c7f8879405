//! Optional API keys: `Authorization: Bearer <key>` on the job routes.
//!
//! Two kinds of key, from the environment (see the README's security section):
//! - submit keys (`TANDEM_API_KEYS_SUBMIT`, `..._FILE`): `POST /predict`, `DELETE /job/<id>`, and
//!   everything a read key may do;
//! - read keys (`TANDEM_API_KEYS_READ`, `..._FILE`): `GET /job/<id>`, `GET /job/<id>/events`.
//!
//! With no key configured every route is open (and the gateway says so in its log at start).
//! The page, its files, `/healthz`, `/readyz`, `/metrics` and `/openapi.json` are always open.
//! Keys are compared in constant time (only a length that matches no key is told apart faster),
//! are never logged, and never appear in `Debug` output or error messages; the `Authorization`
//! header is removed from the request before a handler sees it.
//!
//! With keys, an `Idempotency-Key` belongs to the API key that sent it: the same idempotency key
//! sent with two different API keys makes two jobs, so no client can fetch another's job by
//! guessing its idempotency key.

use std::fmt;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use subtle::{Choice, ConstantTimeEq as _};
use tandem_core::config::Env;
use uuid::Uuid;

use crate::{error::ApiError, state::AppState};

/// Shortest key accepted in the configuration: a key must not be guessable.
pub const MIN_KEY_LEN: usize = 16;
/// Longest key accepted in the configuration.
pub const MAX_KEY_LEN: usize = 512;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Submitting and cancelling jobs.
    Submit,
    /// Reading jobs.
    Read,
}

/// One configured key; its bytes are never printed.
#[derive(Clone)]
struct Key(Box<[u8]>);

/// The configured keys. Empty: no authentication.
#[derive(Clone, Default)]
pub struct ApiKeys {
    submit: Vec<Key>,
    read: Vec<Key>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("submit", &format_args!("{} key(s)", self.submit.len()))
            .field("read", &format_args!("{} key(s)", self.read.len()))
            .finish()
    }
}

impl ApiKeys {
    /// Keys from lists (tests, and the environment after validation).
    pub fn new<S: AsRef<str>>(submit: &[S], read: &[S]) -> Self {
        let keys = |list: &[S]| {
            list.iter()
                .map(|k| Key(k.as_ref().as_bytes().into()))
                .collect()
        };
        Self {
            submit: keys(submit),
            read: keys(read),
        }
    }

    /// Reads `TANDEM_API_KEYS_SUBMIT`, `TANDEM_API_KEYS_READ` and their `_FILE` variants.
    pub fn from_env(env: &mut Env) -> Self {
        let submit = read_keys(env, "TANDEM_API_KEYS_SUBMIT");
        let read = read_keys(env, "TANDEM_API_KEYS_READ");
        if submit.is_empty() && !read.is_empty() {
            env.error(
                "TANDEM_API_KEYS_READ is set but no submit key is (TANDEM_API_KEYS_SUBMIT): \
                 nobody could submit a job",
            );
        }
        Self::new(&submit, &read)
    }

    /// Whether requests to the job routes need a key.
    pub fn enabled(&self) -> bool {
        !(self.submit.is_empty() && self.read.is_empty())
    }

    /// How many keys of each kind: (submit, read).
    pub fn counts(&self) -> (usize, usize) {
        (self.submit.len(), self.read.len())
    }

    /// Checks a request's `Authorization` header for `scope`. Returns who sent it: a digest of
    /// the key (never the key), or `None` when no keys are configured.
    pub fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<Option<Uuid>, ApiError> {
        if !self.enabled() {
            return Ok(None);
        }
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(if headers.contains_key(header::AUTHORIZATION) {
                ApiError::InvalidApiKey("send one Authorization header, not several")
            } else {
                ApiError::MissingApiKey
            });
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty() && !token.contains(' '))
            .ok_or(ApiError::InvalidApiKey(
                "the Authorization header must be `Bearer <API key>`",
            ))?;
        // Both lists are always compared in full, so the time taken does not say which matched.
        let submit = matches(&self.submit, token.as_bytes());
        let read = matches(&self.read, token.as_bytes());
        match (scope, bool::from(submit), bool::from(read)) {
            (_, true, _) | (Scope::Read, _, true) => {
                Ok(Some(Uuid::new_v5(&Uuid::NAMESPACE_OID, token.as_bytes())))
            }
            (Scope::Submit, false, true) => Err(ApiError::InsufficientScope),
            _ => Err(ApiError::InvalidApiKey("the API key is not valid")),
        }
    }
}

/// Whether `token` equals one of `keys`, in time that depends only on the keys' lengths.
fn matches(keys: &[Key], token: &[u8]) -> Choice {
    keys.iter()
        .fold(Choice::from(0), |found, key| found | key.0.ct_eq(token))
}

/// The keys of `name` (comma or newline separated) and of the file `name_FILE` (one per line,
/// `#` comments), checked; a problem names the variable and the key's position, never the key.
fn read_keys(env: &mut Env, name: &str) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(list) = env.optional_string(name) {
        check_keys(env, name, &list, &mut keys);
    }
    let file_var = format!("{name}_FILE");
    if let Some(path) = env.optional_string(&file_var) {
        match std::fs::read_to_string(path.trim()) {
            Ok(text) => {
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|line| !line.trim_start().starts_with('#'))
                    .collect();
                check_keys(env, &file_var, &lines.join("\n"), &mut keys);
            }
            Err(e) => env.error(format!("{file_var}={path:?} cannot be read: {e}")),
        }
    }
    keys
}

fn check_keys(env: &mut Env, source: &str, text: &str, keys: &mut Vec<String>) {
    let listed = text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|key| !key.is_empty());
    for (n, key) in listed.enumerate() {
        let n = n + 1;
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            env.error(format!(
                "{source}: key {n} has characters other than visible ASCII"
            ));
        } else if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            env.error(format!(
                "{source}: key {n} has {} characters; keys need {MIN_KEY_LEN} to {MAX_KEY_LEN} \
                 (e.g. `openssl rand -hex 32`)",
                key.len()
            ));
        } else {
            keys.push(key.to_owned());
        }
    }
}

/// Layer function for the submit routes (`POST /predict`, `DELETE /job/<id>`).
pub async fn require_submit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    require(&state, Scope::Submit, request, next).await
}

/// Layer function for the read routes (`GET /job/<id>`, `GET /job/<id>/events`).
pub async fn require_read(State(state): State<AppState>, request: Request, next: Next) -> Response {
    require(&state, Scope::Read, request, next).await
}

async fn require(state: &AppState, scope: Scope, mut request: Request, next: Next) -> Response {
    let checked = state.config.api_keys.authorize(request.headers(), scope);
    // Nothing after this point needs the key: no handler or log can leak it.
    request.headers_mut().remove(header::AUTHORIZATION);
    match checked {
        Ok(client) => {
            if let Some(client) = client {
                scope_idempotency_key(request.headers_mut(), client);
            }
            next.run(request).await
        }
        Err(e) => {
            tracing::debug!(
                code = e.code(),
                path = request.uri().path(),
                "request refused"
            );
            e.into_response()
        }
    }
}

/// Replaces a valid `Idempotency-Key` (1 to 256 characters, as `POST /predict` accepts) by a
/// digest of it and of the client; an invalid one is left for `POST /predict` to refuse.
fn scope_idempotency_key(headers: &mut HeaderMap, client: Uuid) {
    let Some(key) = headers
        .get(crate::routes::predict::IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=256).contains(&k.len()))
    else {
        return;
    };
    let scoped = Uuid::new_v5(&client, key.as_bytes()).simple().to_string();
    if let Ok(value) = axum::http::HeaderValue::from_str(&scoped) {
        headers.insert(crate::routes::predict::IDEMPOTENCY_KEY, value);
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const SUBMIT: &str = "submit-key-0123456789";
    const READ: &str = "read-key-0123456789ab";

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn code(result: Result<Option<Uuid>, ApiError>) -> &'static str {
        result.err().map_or("ok", |e| e.code())
    }

    #[test]
    fn scopes_are_enforced() {
        let keys = ApiKeys::new(&[SUBMIT], &[READ]);
        let submit = with_auth(&format!("Bearer {SUBMIT}"));
        let read = with_auth(&format!("bearer  {READ}"));
        assert_eq!(code(keys.authorize(&submit, Scope::Submit)), "ok");
        assert_eq!(code(keys.authorize(&submit, Scope::Read)), "ok");
        assert_eq!(code(keys.authorize(&read, Scope::Read)), "ok");
        assert_eq!(
            code(keys.authorize(&read, Scope::Submit)),
            "insufficient_scope"
        );
        for bad in [
            "Bearer nope",
            &format!("Basic {SUBMIT}"),
            &format!("Bearer {SUBMIT}x"),
            "Bearer",
        ] {
            assert_eq!(
                code(keys.authorize(&with_auth(bad), Scope::Read)),
                "invalid_api_key",
                "{bad}"
            );
        }
        assert_eq!(
            code(keys.authorize(&HeaderMap::new(), Scope::Read)),
            "missing_api_key"
        );
        assert_eq!(
            code(ApiKeys::default().authorize(&HeaderMap::new(), Scope::Submit)),
            "ok"
        );
    }

    #[test]
    fn configuration_errors_never_show_a_key() {
        let mut env = Env::from_pairs([
            (
                "TANDEM_API_KEYS_SUBMIT",
                "short-secret, ok-key-0123456789abc",
            ),
            ("TANDEM_API_KEYS_READ", ""),
        ]);
        let keys = ApiKeys::from_env(&mut env);
        assert_eq!(keys.counts(), (1, 0));
        let message = env.finish().unwrap_err().to_string();
        assert!(
            message.contains("TANDEM_API_KEYS_SUBMIT: key 1 has 12"),
            "{message}"
        );
        assert!(!message.contains("short-secret"), "{message}");
        assert!(!format!("{keys:?}").contains("ok-key"));

        let mut env = Env::from_pairs([("TANDEM_API_KEYS_READ", READ)]);
        let _ = ApiKeys::from_env(&mut env);
        assert!(env.finish().is_err(), "read keys without submit keys");
    }
}
