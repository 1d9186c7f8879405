//! `docker-compose.yml` from nothing, used as its clients use it: the original clients' exact
//! `curl` calls, the deployment suite, SSE and the web page, all through the published port.

use std::{process::Stdio, time::Duration};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    LABEL,
    docker::{GATEWAY_PORT, Kind, SERIAL, Stack, blocking, docker},
    support::{photo, workspace_root},
};

/// `curl args...` with `stdin` on its standard input; its output, which must be JSON.
fn curl(args: &[&str], stdin: Option<Vec<u8>>) -> Value {
    use std::io::Write as _;
    let mut child = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl (the original clients' tool) runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(body) = stdin {
        input.write_all(&body).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "curl {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The original service's clients, exactly: `curl -X POST -H "Content-Type: application/json"
/// -d @- localhost:8000/predict` with `{"image_data": "<base64>"}` on stdin, then
/// `curl localhost:8000/job/<id>` until the slow label is there (here on the tests' port).
async fn the_original_clients_calls() {
    let host = format!("localhost:{GATEWAY_PORT}");
    let body = serde_json::to_vec(&serde_json::json!({
        "image_data": base64::engine::general_purpose::STANDARD.encode(photo("chelsea.jpg"))
    }))
    .unwrap();
    let predict = format!("{host}/predict");
    let reply = blocking(|| {
        curl(
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                "@-",
                &predict,
            ],
            Some(body),
        )
    });
    assert_eq!(reply["efficientnet_lite0"], "Egyptian cat", "{reply}");
    let id = reply["job_id"].as_str().expect("a job id").to_owned();

    let job_url = format!("{host}/job/{id}");
    let started = std::time::Instant::now();
    let job = loop {
        let job = blocking(|| curl(&[&job_url], None));
        // While the job runs the original field is there, empty.
        if matches!(
            job["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            break job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no slow label: {job}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job[&id]["prediction"], LABEL, "{job}");
    assert_eq!(job["status"], "succeeded", "{job}");
}

/// `tests/it/deployment.rs`, run by cargo against this stack's gateway.
fn the_deployment_suite() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args([
            "test",
            "--quiet",
            "-p",
            "tandem-tests",
            "--test",
            "it",
            "deployment",
        ])
        .env(
            "TANDEM_TEST_BASE_URL",
            format!("http://127.0.0.1:{GATEWAY_PORT}"),
        )
        .current_dir(workspace_root())
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the deployment suite failed against the stack:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let passed = stdout
        .lines()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        !passed.contains(" 0 passed"),
        "no deployment test ran: {passed}"
    );
    eprintln!("compose: deployment suite against the stack: {passed}");
}

/// The job's events through the published port, to `succeeded` with the slow label.
async fn sse_through_the_published_port(stack_gateway: &crate::support::gateway::Gateway) {
    let response = stack_gateway
        .predict_raw(photo("chelsea.jpg"), "image/jpeg")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.unwrap();
    let id = reply["job_id"].as_str().unwrap().to_owned();
    let mut events = stack_gateway.events(&id).await;
    assert_eq!(events.status, StatusCode::OK);
    let received = events.collect(Duration::from_secs(60)).await;
    let last = received.last().expect("events");
    assert_eq!(last.event, "succeeded", "{received:?}");
    assert_eq!(last.json()["slow"]["label"], LABEL);
}

/// `GET /` is the web page, and everything it links to loads from the gateway (a plain client,
/// as a browser: the page's assets are not API replies).
async fn the_web_page_loads(gateway: &crate::support::gateway::Gateway) {
    let browser = reqwest::Client::new();
    let response = browser.get(gateway.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/html"), "{kind}");
    let html = response.text().await.unwrap();
    assert!(
        html.contains("<form") || html.contains("<input"),
        "no upload form: {html}"
    );
    let mut links = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        let mut rest = html.as_str();
        while let Some(start) = rest.find(attribute) {
            rest = &rest[start + attribute.len()..];
            let end = rest.find('"').unwrap();
            let link = &rest[..end];
            if link.starts_with('/') && !link.starts_with("//") {
                links.push(link.to_owned());
            }
            rest = &rest[end..];
        }
    }
    for link in links {
        let response = browser.get(gateway.url(&link)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "the page's {link}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stack_comes_up_healthy_and_serves_its_clients() {
    let Some(docker) = docker() else { return };
    let _serial = SERIAL.lock().await;
    let stack = Stack::new(&docker, Kind::Single, "stack");
    let took = stack.up();
    eprintln!(
        "compose: docker-compose.yml up --wait from nothing: {:.1} s",
        took.as_secs_f64()
    );
    stack.assert_all_healthy();
    assert_eq!(stack.containers("slow-worker").len(), 2, "two slow-workers");

    let gateway = Stack::gateway(GATEWAY_PORT);
    the_original_clients_calls().await;
    sse_through_the_published_port(&gateway).await;
    the_web_page_loads(&gateway).await;
    blocking(the_deployment_suite);
    // No Tandem process runs as root, and the root filesystems are read-only.
    for service in ["gateway", "model-server", "slow-worker", "nats"] {
        for id in stack.containers(service) {
            let out = docker.run(&[
                "inspect",
                "--format",
                "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}",
                &id,
            ]);
            let (user, read_only) = out.trim().split_once(' ').unwrap();
            assert!(
                !user.is_empty() && user != "root" && user != "0",
                "{service} runs as {user:?}"
            );
            assert_eq!(
                read_only, "true",
                "{service}: root filesystem not read-only"
            );
        }
    }
    // No model and no key is baked into the image: the models are mounted, keys come from the
    // environment.
    let image = std::env::var("TANDEM_IMAGE").unwrap();
    let baked = docker.run(&[
        "run", "--rm", "--network", "none", "--label", "io.tandem.compose-test=1", &image, "bash", "-c",
        "find / -xdev -type f \\( -name '*.onnx' -o -name '*.pem' -o -name '*.key' -o -name '*.nk' -o -name '*.creds' \\) \
         -not -path '/etc/ssl/*' -not -path '/usr/share/ca-certificates/*' 2>/dev/null; true",
    ]);
    assert!(
        baked.trim().is_empty(),
        "the image carries models or keys: {baked}"
    );
    stack.assert_all_healthy();
    stack.finish();
}
