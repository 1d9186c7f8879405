//! NATS settings from the environment: credentials, TLS and servers, every problem reported
//! together, no secret ever shown; the streams' limits derived from them.

use std::{path::PathBuf, time::Duration};

use super::{
    NatsAuth, NatsSettings, audits_stream_config, jobs_stream_config, webhooks_stream_config,
};
use crate::config::Env;

const SEED: &str = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";

fn settings(pairs: &[(&str, &str)]) -> Result<NatsSettings, Vec<String>> {
    let mut env = Env::from_pairs(pairs.iter().map(|(k, v)| (*k, *v)));
    let settings = NatsSettings::from_env(&mut env);
    env.finish().map(|()| settings).map_err(|e| e.0)
}

#[test]
fn by_default_one_local_server_no_credentials_and_no_tls() {
    let settings = settings(&[]).unwrap();
    assert_eq!(settings.servers(), ["nats://127.0.0.1:4222"]);
    assert_eq!(settings.auth, NatsAuth::None);
    assert!(!settings.tls.required);
    assert_eq!(settings.replicas, 1);
}

/// Settings, and what they must give.
type Case<'a> = (&'a [(&'a str, &'a str)], fn(&NatsAuth) -> bool);

#[test]
fn each_kind_of_credentials_is_read() {
    let cases: [Case<'_>; 5] = [
        (
            &[
                ("TANDEM_NATS_USER", "tandem"),
                ("TANDEM_NATS_PASSWORD", "pw"),
            ],
            |a| matches!(a, NatsAuth::UserPassword { user, password } if user == "tandem" && password.expose() == "pw"),
        ),
        (
            &[("TANDEM_NATS_TOKEN", "tok")],
            |a| matches!(a, NatsAuth::Token(t) if t.expose() == "tok"),
        ),
        (
            &[("TANDEM_NATS_NKEY_SEED", SEED)],
            |a| matches!(a, NatsAuth::NKeySeed(s) if s.expose() == SEED),
        ),
        (
            &[("TANDEM_NATS_NKEY_SEED_FILE", "/run/secrets/seed")],
            |a| *a == NatsAuth::NKeySeedFile(PathBuf::from("/run/secrets/seed")),
        ),
        (
            &[("TANDEM_NATS_CREDS_FILE", "/run/secrets/tandem.creds")],
            |a| *a == NatsAuth::CredsFile(PathBuf::from("/run/secrets/tandem.creds")),
        ),
    ];
    for (pairs, expected) in cases {
        let settings = settings(pairs).unwrap();
        assert!(
            expected(&settings.auth),
            "{pairs:?} gave {:?}",
            settings.auth
        );
    }
}

#[test]
fn conflicting_and_incomplete_settings_are_reported_together_with_the_rest() {
    let errors = settings(&[
        ("TANDEM_NATS_USER", "tandem"),
        ("TANDEM_NATS_PASSWORD", "hunter2-password"),
        ("TANDEM_NATS_TOKEN", "s3cret-token"),
        ("TANDEM_NATS_CREDS_FILE", "/x.creds"),
        ("TANDEM_NATS_TLS_CERT_FILE", "/client.pem"),
        ("TANDEM_NATS_TLS_REQUIRED", "maybe"),
        ("TANDEM_MAX_DELIVER", "0"),
    ])
    .unwrap_err();
    let all = errors.join("\n");
    assert_eq!(errors.len(), 4, "{all}");
    assert!(
        all.contains(
            "TANDEM_NATS_USER/TANDEM_NATS_PASSWORD, TANDEM_NATS_TOKEN, TANDEM_NATS_CREDS_FILE"
        ),
        "{all}"
    );
    assert!(all.contains("TANDEM_NATS_TLS_KEY_FILE"), "{all}");
    assert!(all.contains("TANDEM_NATS_TLS_REQUIRED"), "{all}");
    assert!(all.contains("TANDEM_MAX_DELIVER"), "{all}");
    assert!(!all.contains("hunter2") && !all.contains("s3cret"), "{all}");

    for (pairs, needle) in [
        (
            &[("TANDEM_NATS_USER", "u")][..],
            "without TANDEM_NATS_PASSWORD",
        ),
        (
            &[("TANDEM_NATS_PASSWORD", "p")][..],
            "without TANDEM_NATS_USER",
        ),
        (
            &[
                ("TANDEM_NATS_NKEY_SEED", SEED),
                ("TANDEM_NATS_NKEY_SEED_FILE", "/seed"),
            ][..],
            "more than one way",
        ),
        (
            &[("TANDEM_NATS_TLS_KEY_FILE", "/key.pem")][..],
            "go together",
        ),
        (
            &[
                ("TANDEM_NATS_URL", "nats://u:p@127.0.0.1:4222"),
                ("TANDEM_NATS_TOKEN", "t"),
            ][..],
            "TANDEM_NATS_URL carries credentials",
        ),
        (
            &[("TANDEM_NATS_URL", "nats://127.0.0.1:4222,http://x:1")][..],
            "is not a NATS URL",
        ),
        (&[("TANDEM_NATS_URL", ",")][..], "names no server"),
    ] {
        let errors = settings(pairs).unwrap_err().join("\n");
        assert!(errors.contains(needle), "{pairs:?}: {errors}");
    }
}

#[test]
fn a_malformed_nkey_seed_is_refused_without_showing_it() {
    let errors = settings(&[("TANDEM_NATS_NKEY_SEED", "SUnot-a-seed-at-all")])
        .unwrap_err()
        .join("\n");
    assert!(errors.contains("not an NKey user seed"), "{errors}");
    assert!(!errors.contains("not-a-seed"), "{errors}");
}

#[test]
fn debug_output_shows_no_secret() {
    for pairs in [
        &[
            ("TANDEM_NATS_USER", "tandem"),
            ("TANDEM_NATS_PASSWORD", "hunter2-pw"),
        ][..],
        &[("TANDEM_NATS_TOKEN", "hunter2-token")][..],
        &[("TANDEM_NATS_NKEY_SEED", SEED)][..],
        &[(
            "TANDEM_NATS_URL",
            "nats://tandem:hunter2-url@nats-1:4222,nats://nats-2:4222",
        )][..],
        &[("TANDEM_NATS_URL", "nats://hunter2-urltoken@nats-1:4222")][..],
    ] {
        let settings = settings(pairs).unwrap();
        let shown = format!("{settings:?} {}", settings.redacted_url());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(&SEED[2..]), "{shown}");
        assert!(
            shown.contains("<redacted>") || shown.contains("***"),
            "{shown}"
        );
    }
}

#[test]
fn several_servers_are_comma_separated() {
    let settings = settings(&[(
        "TANDEM_NATS_URL",
        "nats://nats-1:4222, nats://nats-2:4222,nats://nats-3:4222",
    )])
    .unwrap();
    assert_eq!(
        settings.servers(),
        [
            "nats://nats-1:4222",
            "nats://nats-2:4222",
            "nats://nats-3:4222"
        ]
    );
}

#[test]
fn tls_is_required_once_a_tls_file_is_given_unless_said_otherwise() {
    let with_ca = settings(&[("TANDEM_NATS_TLS_CA_FILE", "/ca.pem")]).unwrap();
    assert!(with_ca.tls.required);
    assert_eq!(with_ca.tls.ca_file, Some(PathBuf::from("/ca.pem")));
    let optional = settings(&[
        ("TANDEM_NATS_TLS_CA_FILE", "/ca.pem"),
        ("TANDEM_NATS_TLS_REQUIRED", "false"),
    ])
    .unwrap();
    assert!(!optional.tls.required);
    let forced = settings(&[("TANDEM_NATS_TLS_REQUIRED", "1")]).unwrap();
    assert!(forced.tls.required);
    let client = settings(&[
        ("TANDEM_NATS_TLS_CERT_FILE", "/c.pem"),
        ("TANDEM_NATS_TLS_KEY_FILE", "/k.pem"),
    ])
    .unwrap();
    assert!(client.tls.required);
}

#[test]
fn no_stream_remembers_message_ids_longer_than_a_job_lives() {
    let long = settings(&[]).unwrap();
    assert_eq!(long.duplicate_window, Duration::from_secs(120));
    let short = settings(&[("TANDEM_JOB_TTL_SECS", "15")]).unwrap();
    for (settings, want) in [(&long, 120), (&short, 15)] {
        for config in [
            jobs_stream_config(settings),
            webhooks_stream_config(settings),
            audits_stream_config(settings),
        ] {
            let name = &config.name;
            assert_eq!(config.duplicate_window, Duration::from_secs(want), "{name}");
        }
    }
}
