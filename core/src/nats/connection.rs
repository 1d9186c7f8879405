//! [`connect`]: one attempt at once, so that credentials or TLS that NATS refuses are reported as
//! a configuration error, then (when NATS is merely not there yet) retrying in the background.

use std::path::PathBuf;

use async_nats::{ConnectErrorKind, ConnectOptions};

use super::{NatsAuth, NatsSettings};

/// Why [`connect`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    #[error("cannot read {var}={}: {source}", path.display())]
    File {
        var: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TANDEM_NATS_CREDS_FILE={} is not a NATS credentials file: {reason}", path.display())]
    Creds { path: PathBuf, reason: String },
    #[error("NATS at {servers} refused the connection ({reason}): {advice}")]
    Refused {
        servers: String,
        reason: String,
        advice: String,
    },
    #[error(
        "TLS with NATS at {servers} failed ({reason}): check TANDEM_NATS_TLS_CA_FILE (the CA that \
         signed the server's certificate) and, when the server verifies clients, \
         TANDEM_NATS_TLS_CERT_FILE and TANDEM_NATS_TLS_KEY_FILE"
    )]
    Tls { servers: String, reason: String },
    #[error("cannot connect to NATS at {servers}: {reason}")]
    Other { servers: String, reason: String },
}

/// The parts of the connection options that come from files, read once per [`connect`].
struct Loaded {
    nkey_seed: Option<String>,
    creds: Option<String>,
}

impl Loaded {
    fn read(settings: &NatsSettings) -> Result<Self, NatsConnectError> {
        let read = |var: &'static str, path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|source| NatsConnectError::File {
                var,
                path: path.clone(),
                source,
            })
        };
        Ok(Self {
            nkey_seed: match &settings.auth {
                NatsAuth::NKeySeedFile(path) => {
                    Some(read("TANDEM_NATS_NKEY_SEED_FILE", path)?.trim().to_owned())
                }
                _ => None,
            },
            creds: match &settings.auth {
                NatsAuth::CredsFile(path) => Some(read("TANDEM_NATS_CREDS_FILE", path)?),
                _ => None,
            },
        })
    }
}

/// How often the client pings its server. A server cut off by the network (no reset, just
/// silence) is given up after two unanswered pings and another node of the cluster is tried:
/// with async-nats's default of 60 s, a client stayed on a silent node for minutes (found by the
/// compose tests' partition case).
const PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

fn options(
    settings: &NatsSettings,
    name: &str,
    loaded: &Loaded,
) -> Result<ConnectOptions, NatsConnectError> {
    let mut options = ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .ping_interval(PING_INTERVAL)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                async_nats::Event::ServerError(e) => tracing::error!(error = %e, "NATS error"),
                async_nats::Event::ClientError(e) => {
                    tracing::warn!(error = %e, "NATS connection problem");
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    options = match &settings.auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.expose().to_owned())
        }
        NatsAuth::Token(token) => options.token(token.expose().to_owned()),
        NatsAuth::NKeySeed(seed) => options.nkey(seed.expose().to_owned()),
        NatsAuth::NKeySeedFile(_) => options.nkey(loaded.nkey_seed.clone().unwrap_or_default()),
        NatsAuth::CredsFile(path) => options
            .credentials(loaded.creds.as_deref().unwrap_or_default())
            .map_err(|e| NatsConnectError::Creds {
                path: path.clone(),
                reason: e.to_string(),
            })?,
    };
    let tls = &settings.tls;
    if let Some(ca) = &tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options.require_tls(tls.required))
}

/// What went wrong in the TLS handshake, if that is what failed (a certificate not trusted,
/// none sent, no TLS on the other side). The client reports most of these as I/O errors that
/// carry the TLS library's error.
fn tls_failure(error: &async_nats::ConnectError) -> Option<String> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<async_nats::rustls::Error>() {
            return Some(cause.to_string());
        }
        if let Some(inner) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .filter(|inner| inner.is::<async_nats::rustls::Error>())
        {
            return Some(inner.to_string());
        }
        source = cause.source();
    }
    (error.kind() == ConnectErrorKind::Tls).then(|| chain(error))
}

/// The error and every cause under it, on one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Connects to NATS.
///
/// The first attempt is made at once: credentials NATS refuses, or a TLS handshake that fails,
/// end here with a [`NatsConnectError`] naming the settings to check (a wrong password does not
/// get better by retrying). When no server answers yet, the client is returned anyway and keeps
/// trying in the background for ever: services start while NATS is away and report it through
/// readiness and 503s instead of crash-looping. Later disconnections reconnect the same way.
pub async fn connect(
    settings: &NatsSettings,
    name: &str,
) -> Result<async_nats::Client, NatsConnectError> {
    let loaded = Loaded::read(settings)?;
    let servers = settings.redacted_url();
    let addrs = settings.servers();
    match options(settings, name, &loaded)?
        .connect(addrs.clone())
        .await
    {
        Ok(client) => Ok(client),
        Err(e) => match e.kind() {
            ConnectErrorKind::AuthorizationViolation => Err(NatsConnectError::Refused {
                servers,
                reason: "authorization violation".into(),
                advice: settings.auth.advice(),
            }),
            ConnectErrorKind::Authentication => Err(NatsConnectError::Refused {
                servers,
                reason: chain(&e),
                advice: settings.auth.advice(),
            }),
            _ if tls_failure(&e).is_some() => Err(NatsConnectError::Tls {
                servers,
                reason: tls_failure(&e).unwrap_or_default(),
            }),
            ConnectErrorKind::ServerParse => Err(NatsConnectError::Other {
                servers,
                reason: chain(&e),
            }),
            _ => {
                tracing::warn!(%servers, error = %chain(&e), "NATS is not reachable yet; retrying in the background");
                options(settings, name, &loaded)?
                    .retry_on_initial_connect()
                    .connect(addrs)
                    .await
                    .map_err(|e| NatsConnectError::Other {
                        servers,
                        reason: chain(&e),
                    })
            }
        },
    }
}
