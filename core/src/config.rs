//! Typed configuration from environment variables, with every error reported at once.
//!
//! Each binary declares one config struct and builds it with an [`Env`]: every lookup records
//! its own error instead of returning early, and [`Env::finish`] reports them all together, so a
//! user fixes a broken deployment in one pass rather than one variable per restart.

use std::{fmt::Display, str::FromStr, time::Duration};

/// Reads environment variables (or any key/value source, for tests) and collects errors.
#[derive(Debug, Default)]
pub struct Env {
    /// `None`: the process environment; `Some`: only these pairs.
    pairs: Option<Vec<(String, String)>>,
    errors: Vec<String>,
    read: std::cell::RefCell<Vec<String>>,
}

/// Every problem found in a configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl Env {
    /// Reads the process environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads only the given pairs, never the process environment (tests, and configurations
    /// built by a program), so what the process happens to have set cannot leak in. A key given
    /// twice takes its last value.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            pairs: Some(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
            errors: Vec::new(),
            read: Default::default(),
        }
    }

    fn raw(&self, key: &str) -> Option<String> {
        self.read.borrow_mut().push(key.to_owned());
        let value = match &self.pairs {
            Some(pairs) => pairs
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone()),
            None => std::env::var(key).ok(),
        };
        value.filter(|v| !v.trim().is_empty())
    }

    /// An optional string.
    pub fn optional_string(&mut self, key: &str) -> Option<String> {
        self.raw(key)
    }

    /// A string with a default.
    pub fn string(&mut self, key: &str, default: &str) -> String {
        self.raw(key).unwrap_or_else(|| default.to_owned())
    }

    /// Any `FromStr` value with a default; a value that does not parse is recorded as an error.
    pub fn parse<T>(&mut self, key: &str, default: T) -> T
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(key) {
            None => default,
            Some(text) => match text.trim().parse() {
                Ok(value) => value,
                Err(e) => {
                    self.errors
                        .push(format!("{key}={text:?} is not valid: {e}"));
                    default
                }
            },
        }
    }

    /// A duration in milliseconds.
    pub fn millis(&mut self, key: &str, default: Duration) -> Duration {
        let ms = self.parse::<u64>(key, u64::try_from(default.as_millis()).unwrap_or(u64::MAX));
        Duration::from_millis(ms)
    }

    /// A duration in seconds.
    pub fn seconds(&mut self, key: &str, default: Duration) -> Duration {
        Duration::from_secs(self.parse::<u64>(key, default.as_secs()))
    }

    /// Records a problem found while checking values together (for example, min > max).
    pub fn error(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    /// Every variable name looked up so far (so deployment files can be checked against what
    /// the binaries really read).
    pub fn keys_read(&self) -> Vec<String> {
        self.read.borrow().clone()
    }

    /// The collected errors, if any.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(self.errors))
        }
    }
}

/// A binary's configuration, read from an [`Env`] once at start.
///
/// Implementors write [`FromEnv::read`]; the rest is shared: parsing with every error reported,
/// the list of variables a deployment file may set, and the exit a binary makes on bad values.
pub trait FromEnv: Sized {
    /// Reads every setting, recording bad values in `env`.
    fn read(env: &mut Env) -> Self;

    /// Reads `env` (tests pass [`Env::from_pairs`]); every bad value is reported.
    fn from_source(mut env: Env) -> Result<Self, ConfigError> {
        let config = Self::read(&mut env);
        env.finish()?;
        Ok(config)
    }

    /// Reads the process environment.
    fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(Env::new())
    }

    /// Every environment variable the binary reads (deployment files are checked against it).
    fn variables() -> Vec<String> {
        let mut env = Env::new();
        let _ = Self::read(&mut env);
        env.keys_read()
    }

    /// For `main`: the configuration, or every problem on stderr and exit status 2.
    fn from_env_or_exit(binary: &str) -> Self {
        Self::from_env().unwrap_or_else(|e| {
            eprintln!("{binary}: {e}");
            std::process::exit(2)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_bad_value_together() {
        let mut env = Env::from_pairs([("A_PORT", "eighty"), ("A_MS", "-1")]);
        let port: u16 = env.parse("A_PORT", 80);
        let ms = env.millis("A_MS", Duration::from_millis(5));
        assert_eq!(port, 80);
        assert_eq!(ms, Duration::from_millis(5));
        let err = env.finish().unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(err.to_string().contains("A_PORT"));
        assert!(err.to_string().contains("A_MS"));
    }

    #[test]
    fn given_pairs_never_fall_back_to_the_process_environment() {
        // PATH is set in every process that runs these tests.
        assert!(std::env::var_os("PATH").is_some());
        let mut env = Env::from_pairs([("A_KEY", "1")]);
        assert_eq!(env.optional_string("PATH"), None);
        assert_eq!(env.optional_string("A_KEY").as_deref(), Some("1"));
        assert!(Env::new().optional_string("PATH").is_some());
    }

    #[test]
    fn defaults_apply_and_good_values_parse() {
        let mut env = Env::from_pairs([("B_N", "7")]);
        assert_eq!(env.parse::<u32>("B_N", 1), 7);
        assert_eq!(env.string("B_UNSET_FOR_TEST", "x"), "x");
        assert!(env.finish().is_ok());
    }
}
