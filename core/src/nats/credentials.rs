//! Who a service is to NATS and how the connection is protected, from the environment: the
//! servers, the credentials (user/password, token, NKey seed, creds file) and TLS (custom CA,
//! client certificate). Credentials are [`Secret`]s, which no `Debug` output, log line or error
//! message shows; conflicting or incomplete settings are configuration errors, reported with
//! all the others.

use std::{fmt, path::PathBuf, str::FromStr as _};

use async_nats::ServerAddr;

use crate::config::Env;

use super::NatsSettings;

/// A secret value (password, token, NKey seed): `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that needs it: the NATS client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How the service proves who it is to NATS (at most one way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials (or those embedded in `TANDEM_NATS_URL`).
    #[default]
    None,
    /// `TANDEM_NATS_USER` and `TANDEM_NATS_PASSWORD`.
    UserPassword { user: String, password: Secret },
    /// `TANDEM_NATS_TOKEN`.
    Token(Secret),
    /// `TANDEM_NATS_NKEY_SEED`: an NKey user seed (`SU...`).
    NKeySeed(Secret),
    /// `TANDEM_NATS_NKEY_SEED_FILE`: a file holding the seed (read at connection time).
    NKeySeedFile(PathBuf),
    /// `TANDEM_NATS_CREDS_FILE`: a `.creds` file (user JWT and seed, as `nsc` writes them).
    CredsFile(PathBuf),
}

/// TLS towards NATS. The system's roots are trusted unless a CA file is given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// `TANDEM_NATS_TLS_CA_FILE`: PEM certificates of the CA that signed the servers'.
    pub ca_file: Option<PathBuf>,
    /// `TANDEM_NATS_TLS_CERT_FILE`: the client certificate (PEM), for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    /// `TANDEM_NATS_TLS_KEY_FILE`: its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// `TANDEM_NATS_TLS_REQUIRED`: refuse a server that does not speak TLS. On by default when
    /// any of the files above is set (a `tls://` URL requires TLS too).
    pub required: bool,
}

pub(super) const AUTH_VARS: &str = "TANDEM_NATS_USER/TANDEM_NATS_PASSWORD, TANDEM_NATS_TOKEN, \
                         TANDEM_NATS_NKEY_SEED, TANDEM_NATS_NKEY_SEED_FILE or TANDEM_NATS_CREDS_FILE";

impl NatsAuth {
    /// Reads the credentials, recording missing halves and conflicting choices in `env`.
    /// Secret values never appear in an error.
    pub(super) fn from_env(env: &mut Env) -> Self {
        let user = env.optional_string("TANDEM_NATS_USER");
        let password = env.optional_string("TANDEM_NATS_PASSWORD");
        let token = env.optional_string("TANDEM_NATS_TOKEN");
        let seed = env.optional_string("TANDEM_NATS_NKEY_SEED");
        let seed_file = env.optional_string("TANDEM_NATS_NKEY_SEED_FILE");
        let creds_file = env.optional_string("TANDEM_NATS_CREDS_FILE");

        let mut chosen: Vec<(&str, Self)> = Vec::new();
        match (user, password) {
            (Some(user), Some(password)) => chosen.push((
                "TANDEM_NATS_USER/TANDEM_NATS_PASSWORD",
                Self::UserPassword {
                    user,
                    password: Secret::new(password),
                },
            )),
            (Some(_), None) => env.error("TANDEM_NATS_USER is set without TANDEM_NATS_PASSWORD"),
            (None, Some(_)) => env.error("TANDEM_NATS_PASSWORD is set without TANDEM_NATS_USER"),
            (None, None) => {}
        }
        if let Some(token) = token {
            chosen.push(("TANDEM_NATS_TOKEN", Self::Token(Secret::new(token))));
        }
        if let Some(seed) = seed {
            let seed = seed.trim().to_owned();
            if !is_user_seed(&seed) {
                env.error(
                    "TANDEM_NATS_NKEY_SEED is not an NKey user seed (58 characters starting \
                     with SU, as `nk -gen user` prints)",
                );
            }
            chosen.push(("TANDEM_NATS_NKEY_SEED", Self::NKeySeed(Secret::new(seed))));
        }
        if let Some(path) = seed_file {
            chosen.push((
                "TANDEM_NATS_NKEY_SEED_FILE",
                Self::NKeySeedFile(path.into()),
            ));
        }
        if let Some(path) = creds_file {
            chosen.push(("TANDEM_NATS_CREDS_FILE", Self::CredsFile(path.into())));
        }
        if chosen.len() > 1 {
            let names: Vec<&str> = chosen.iter().map(|(name, _)| *name).collect();
            env.error(format!(
                "NATS credentials are set more than one way ({}): set only one of {AUTH_VARS}",
                names.join(", ")
            ));
        }
        chosen.pop().map(|(_, auth)| auth).unwrap_or_default()
    }

    /// The settings that hold the credentials (`None` when there are none).
    pub(super) fn variables(&self) -> Option<&'static str> {
        Some(match self {
            Self::None => return None,
            Self::UserPassword { .. } => "TANDEM_NATS_USER and TANDEM_NATS_PASSWORD",
            Self::Token(_) => "TANDEM_NATS_TOKEN",
            Self::NKeySeed(_) => "TANDEM_NATS_NKEY_SEED",
            Self::NKeySeedFile(_) => "TANDEM_NATS_NKEY_SEED_FILE",
            Self::CredsFile(_) => "TANDEM_NATS_CREDS_FILE",
        })
    }

    /// What to do when NATS refuses the connection.
    pub(super) fn advice(&self) -> String {
        match self.variables() {
            Some(variables) => format!("check {variables}"),
            None => format!("it wants credentials: set {AUTH_VARS}"),
        }
    }
}

/// An NKey user seed: `SU`, then base32, 58 characters in all.
fn is_user_seed(seed: &str) -> bool {
    seed.len() == 58
        && seed.starts_with("SU")
        && seed
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

impl NatsTls {
    /// Reads the TLS settings, recording a certificate without its key (or the reverse).
    pub(super) fn from_env(env: &mut Env) -> Self {
        let ca_file = env
            .optional_string("TANDEM_NATS_TLS_CA_FILE")
            .map(PathBuf::from);
        let cert_file = env
            .optional_string("TANDEM_NATS_TLS_CERT_FILE")
            .map(PathBuf::from);
        let key_file = env
            .optional_string("TANDEM_NATS_TLS_KEY_FILE")
            .map(PathBuf::from);
        if cert_file.is_some() != key_file.is_some() {
            env.error("TANDEM_NATS_TLS_CERT_FILE and TANDEM_NATS_TLS_KEY_FILE go together: set both or neither");
        }
        let any_file = ca_file.is_some() || cert_file.is_some() || key_file.is_some();
        let required = match env.optional_string("TANDEM_NATS_TLS_REQUIRED") {
            None => any_file,
            Some(text) => match text.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    env.error(format!(
                        "TANDEM_NATS_TLS_REQUIRED={text:?} is not valid: use true or false"
                    ));
                    any_file
                }
            },
        };
        Self {
            ca_file,
            cert_file,
            key_file,
            required,
        }
    }
}

impl NatsSettings {
    /// The servers of `TANDEM_NATS_URL` (comma-separated: any one of a cluster will do; the
    /// client learns the others from the server and fails over between them).
    pub fn servers(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// `TANDEM_NATS_URL` with any password in it replaced by `***` (for logs and errors).
    pub fn redacted_url(&self) -> String {
        self.servers()
            .into_iter()
            .map(redact_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Checks the server list and that credentials are given one way only.
    pub(super) fn check_servers(&self, env: &mut Env) {
        let servers = self.servers();
        if servers.is_empty() {
            env.error("TANDEM_NATS_URL names no server");
        }
        let mut embedded = false;
        for server in servers {
            match ServerAddr::from_str(server) {
                Ok(addr) => embedded |= addr.has_user_pass(),
                Err(e) => env.error(format!(
                    "TANDEM_NATS_URL: {:?} is not a NATS URL: {e}",
                    redact_url(server)
                )),
            }
        }
        if embedded && self.auth != NatsAuth::None {
            env.error(format!(
                "TANDEM_NATS_URL carries credentials and {} is set too: use one",
                self.auth.variables().unwrap_or_default()
            ));
        }
    }
}

/// A URL with its password (`user:PASSWORD@`) or lone token (`TOKEN@`) replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}
