//! A webhook receiver on loopback that records every request, and the Standard Webhooks
//! reference verifier (the PyPI `standardwebhooks` package, a real peer) to check what it got.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::any,
};
use serde_json::{Value, json};

/// The pinned reference implementation of Standard Webhooks.
pub const STANDARDWEBHOOKS: &str = "standardwebhooks==1.1.0";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Lowercase names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// What the receiver answered (0: it never answered).
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }
}

/// How the receiver answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    /// Records the request, then never answers.
    Hang,
    /// 307 to this location.
    Redirect(String),
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    answer: Mutex<Vec<Answer>>,
}

/// The receiver; stops on drop.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// On a free loopback port, answering 204.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// On `port` (0: any), answering 204.
    pub async fn start_on(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("webhook receiver cannot bind port {port}: {e}"));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(any(receive))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers in this order, one per request, the last one for ever after.
    pub fn answer(&self, answers: &[Answer]) {
        *self.shared.answer.lock().unwrap() = answers.to_vec();
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The requests answered 2xx.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = {
        let mut answers = shared.answer.lock().unwrap();
        match answers.len() {
            0 => Answer::Status(204),
            1 => answers[0].clone(),
            _ => answers.remove(0),
        }
    };
    let answered = match &answer {
        Answer::Status(status) => *status,
        Answer::Hang => 0,
        Answer::Redirect(_) => 307,
    };
    shared.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        answered,
    });
    match answer {
        Answer::Status(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Answer::Hang => std::future::pending().await,
        Answer::Redirect(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
    }
}

/// Where the pinned `standardwebhooks` is installed (`.tandem/py`, git-ignored), installing it
/// with pip on first use.
fn standardwebhooks_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let target = super::workspace_root().join(".tandem/py");
        if !target.join("standardwebhooks-1.1.0.dist-info").exists() {
            let status = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(["--no-deps", "--target"])
                .arg(&target)
                .arg(STANDARDWEBHOOKS)
                .stdout(Stdio::null())
                .status();
            assert!(
                status.as_ref().is_ok_and(|s| s.success()),
                "cannot install the Standard Webhooks reference verifier ({STANDARDWEBHOOKS}) \
                 into {}: {status:?}; the webhook tests need python3 with pip and PyPI once \
                 (or install it there yourself: python3 -m pip install --target .tandem/py {STANDARDWEBHOOKS})",
                target.display()
            );
        }
        target
    })
    .clone()
}

/// Verifies each request with `standardwebhooks.Webhook(secret).verify(body, headers)`;
/// `Err` says which failed and why.
pub fn verify_with_reference(secret: &str, requests: &[Received]) -> Result<(), String> {
    use base64::Engine as _;
    const SCRIPT: &str = r#"
import base64, json, sys
from standardwebhooks.webhooks import Webhook
cases = json.load(sys.stdin)
wh = Webhook(cases["secret"])
for i, case in enumerate(cases["requests"]):
    body = base64.b64decode(case["body"])
    try:
        wh.verify(body, case["headers"])
    except Exception as e:
        print(f"request {i}: {type(e).__name__}: {e}")
        sys.exit(1)
print("ok", len(cases["requests"]))
"#;
    let input = json!({
        "secret": secret,
        "requests": requests.iter().map(|r| json!({
            "headers": r.headers,
            "body": base64::engine::general_purpose::STANDARD.encode(&r.body),
        })).collect::<Vec<_>>(),
    });
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .env("PYTHONPATH", standardwebhooks_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(input.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && said.starts_with("ok") {
        Ok(())
    } else {
        Err(said)
    }
}
