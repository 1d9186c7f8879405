//! NATS access control: the gateway and the workers reach a nats-server that wants a user and
//! password, a token or an NKey, or speaks TLS (a CA made here with the `openssl` CLI, a client
//! certificate when the server verifies clients), with the settings of the README's "NATS
//! security" section. With the right settings the service becomes ready and runs jobs; with
//! wrong or missing ones a service stops at once with an error naming the settings to check,
//! and without showing the secret.

use std::{path::Path, process::Command, time::Duration};

use tandem_core::{
    config::{Env, FromEnv as _},
    nats::{NatsSettings, connect},
};

use crate::{
    slow_path::submit,
    support::{
        app::{AppOptions, spawn_app_with},
        nats::NatsServer,
    },
};

const FINAL: Duration = Duration::from_secs(60);

fn pairs(nats: &NatsServer, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs = vec![("TANDEM_NATS_URL".to_owned(), nats.url())];
    pairs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    pairs
}

/// Starts the service on `nats` with `extra` settings, waits until ready, runs one job.
async fn runs_a_job_with(nats: &NatsServer, extra: &[(&str, &str)]) {
    let app = spawn_app_with(AppOptions {
        workers: 1,
        // The app's own nats-server stays idle: every service uses `nats`.
        env: pairs(nats, extra),
        ..Default::default()
    })
    .await;
    let reply = submit(&app, "chelsea.jpg").await;
    let job = app
        .wait_final(reply["job_id"].as_str().unwrap(), FINAL)
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
}

/// The error the gateway and a worker stop with, given `extra` settings (they must stop, and
/// agree).
async fn refused_with(nats: &NatsServer, extra: &[(&str, &str)]) -> String {
    let mut env = pairs(nats, extra);
    env.push((
        "TANDEM_MODEL_SERVER_URL".into(),
        "http://127.0.0.1:1".into(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = tandem_gateway::GatewayConfig::from_source(Env::from_pairs(env.clone()))
        .expect("the settings themselves are valid");
    let gateway = tokio::time::timeout(
        Duration::from_secs(20),
        Box::pin(tandem_gateway::run(
            listener,
            config,
            std::future::pending(),
        )),
    )
    .await
    .expect("the gateway stops at once instead of retrying for ever")
    .expect_err("the gateway must not start");
    let config = tandem_slow_worker::WorkerConfig::from_source(Env::from_pairs(env)).unwrap();
    let worker = tokio::time::timeout(
        Duration::from_secs(20),
        Box::pin(tandem_slow_worker::run(config, std::future::pending())),
    )
    .await
    .expect("the worker stops at once")
    .expect_err("the worker must not start");
    let (gateway, worker) = (format!("{gateway:#}"), format!("{worker:#}"));
    assert_eq!(gateway, worker);
    eprintln!("refused, as expected: {gateway}");
    gateway
}

#[tokio::test]
async fn user_and_password_right_runs_wrong_or_missing_stops_with_a_clear_error() {
    let nats = NatsServer::start_with_args(&["--user", "tandem", "--pass", "right-horse"]);
    runs_a_job_with(
        &nats,
        &[
            ("TANDEM_NATS_USER", "tandem"),
            ("TANDEM_NATS_PASSWORD", "right-horse"),
        ],
    )
    .await;

    let error = refused_with(
        &nats,
        &[
            ("TANDEM_NATS_USER", "tandem"),
            ("TANDEM_NATS_PASSWORD", "wrong-battery"),
        ],
    )
    .await;
    assert!(error.contains("refused the connection"), "{error}");
    assert!(error.contains("authorization violation"), "{error}");
    assert!(
        error.contains("TANDEM_NATS_USER and TANDEM_NATS_PASSWORD"),
        "{error}"
    );
    assert!(
        !error.contains("wrong-battery"),
        "the password is not shown: {error}"
    );

    let error = refused_with(&nats, &[]).await;
    assert!(error.contains("it wants credentials"), "{error}");
}

#[tokio::test]
async fn a_token_right_runs_wrong_stops() {
    let nats = NatsServer::start_with_args(&["--auth", "right-token-123"]);
    runs_a_job_with(&nats, &[("TANDEM_NATS_TOKEN", "right-token-123")]).await;
    let error = refused_with(&nats, &[("TANDEM_NATS_TOKEN", "wrong-token-456")]).await;
    assert!(error.contains("TANDEM_NATS_TOKEN"), "{error}");
    assert!(!error.contains("wrong-token-456"), "{error}");
}

/// Settings for `tandem_core::nats::connect` alone (no gateway).
fn settings(nats: &NatsServer, extra: &[(&str, &str)]) -> NatsSettings {
    let mut env = Env::from_pairs(pairs(nats, extra));
    let settings = NatsSettings::from_env(&mut env);
    env.finish().expect("valid settings");
    settings
}

#[tokio::test]
async fn an_nkey_seed_inline_or_from_a_file_connects_and_an_unknown_key_is_refused() {
    let user = nkeys::KeyPair::new_user();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nkey.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users: [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let nats = NatsServer::start_with_args(&["-c", conf.to_str().unwrap()]);
    let seed = user.seed().unwrap();
    let seed_file = dir.path().join("seed");
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();

    let inline = settings(&nats, &[("TANDEM_NATS_NKEY_SEED", &seed)]);
    let client = connect(&inline, "test")
        .await
        .expect("the seed is accepted");
    client.flush().await.unwrap();
    let from_file = settings(
        &nats,
        &[("TANDEM_NATS_NKEY_SEED_FILE", seed_file.to_str().unwrap())],
    );
    connect(&from_file, "test")
        .await
        .expect("the seed file is read");

    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let error = connect(
        &settings(&nats, &[("TANDEM_NATS_NKEY_SEED", &stranger)]),
        "test",
    )
    .await
    .expect_err("an unknown key is refused")
    .to_string();
    assert!(error.contains("TANDEM_NATS_NKEY_SEED"), "{error}");
    assert!(!error.contains(&stranger), "{error}");

    let missing = settings(
        &nats,
        &[("TANDEM_NATS_NKEY_SEED_FILE", "/nonexistent/seed")],
    );
    let error = connect(&missing, "test").await.unwrap_err().to_string();
    assert!(
        error.contains("cannot read TANDEM_NATS_NKEY_SEED_FILE=/nonexistent/seed"),
        "{error}"
    );
    let not_creds = settings(&nats, &[("TANDEM_NATS_CREDS_FILE", conf.to_str().unwrap())]);
    let error = connect(&not_creds, "test").await.unwrap_err().to_string();
    assert!(error.contains("is not a NATS credentials file"), "{error}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with `openssl`.
fn make_pki(dir: &Path) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl CLI runs (apt-get install openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Tandem test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat());
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!(
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n\
                 basicConstraints=CA:FALSE\n"
            ),
        )
        .unwrap();
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        run(&[
            &["req"][..],
            &ec,
            &["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"],
        ]
        .concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

#[tokio::test]
async fn tls_with_the_right_ca_runs_without_it_stops_and_client_certificates_are_sent() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let file = |name: &str| pki.path().join(name).to_str().unwrap().to_owned();
    let (ca, cert, key) = (file("ca.pem"), file("server.pem"), file("server.key"));

    let nats = NatsServer::start_with_args(&["--tls", "--tlscert", &cert, "--tlskey", &key]);
    runs_a_job_with(&nats, &[("TANDEM_NATS_TLS_CA_FILE", &ca)]).await;
    let error = refused_with(&nats, &[]).await;
    assert!(error.contains("TLS with NATS"), "{error}");
    assert!(error.contains("TANDEM_NATS_TLS_CA_FILE"), "{error}");

    // A server that verifies clients: the client certificate is needed, and enough.
    let verifying = NatsServer::start_with_args(&[
        "--tlsverify",
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
        "--tlscacert",
        &ca,
    ]);
    let without = settings(&verifying, &[("TANDEM_NATS_TLS_CA_FILE", &ca)]);
    assert!(connect(&without, "test").await.is_err());
    let with = settings(
        &verifying,
        &[
            ("TANDEM_NATS_TLS_CA_FILE", &ca),
            ("TANDEM_NATS_TLS_CERT_FILE", &file("client.pem")),
            ("TANDEM_NATS_TLS_KEY_FILE", &file("client.key")),
        ],
    );
    let client = connect(&with, "test").await.expect("mutual TLS");
    client.flush().await.unwrap();
    // TLS required by the settings, refused by a plain server.
    let plain = NatsServer::start();
    let required = settings(&plain, &[("TANDEM_NATS_TLS_REQUIRED", "true")]);
    let error = connect(&required, "test").await.unwrap_err().to_string();
    assert!(error.contains("TLS"), "{error}");
}

#[test]
fn every_nats_setting_is_documented_in_both_readmes() {
    let mut env = Env::from_pairs::<String, String>([]);
    let _ = NatsSettings::from_env(&mut env);
    let root = crate::support::workspace_root();
    for readme in ["README.md", "nats/README.md"] {
        let text = std::fs::read_to_string(root.join(readme)).unwrap();
        let missing: Vec<String> = env
            .keys_read()
            .into_iter()
            .filter(|key| !text.contains(&format!("`{key}`")))
            .collect();
        assert!(missing.is_empty(), "{readme} does not document {missing:?}");
    }
}
