//! (j) JetStream's store on a small size-limited volume (tests/compose/small-store.yml: tmpfs,
//! 48 MB) fills up while jobs wait in it: the gateway refuses new jobs with a clear error (429
//! `queue_full`, `Retry-After`), the jobs it accepted are not lost, and it takes jobs again once
//! space returns. The volume is filled by a file written next to the store (what any other
//! writer on a full disk does) and freed by removing it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    PHOTO, RATE,
    docker::{GATEWAY_PORT, Kind, NATS_PORTS, SERIAL, Stack, docker},
    faults::{tally_submissions, wait_more_accepted},
    load::Load,
    support::photo,
};

/// Runs `script` in a throwaway container of the Tandem image (as its unprivileged user) with
/// the store's volume at /data.
fn on_the_volume(stack: &Stack, script: &str) -> String {
    let image = std::env::var("TANDEM_IMAGE").expect("TANDEM_IMAGE");
    let volume = format!("{}:/data", stack.volume("nats-data"));
    stack.docker.run(&[
        "run",
        "--rm",
        "--label",
        "io.tandem.compose-test=1",
        "--network",
        "none",
        "-v",
        &volume,
        &image,
        "bash",
        "-c",
        script,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_store_refuses_new_jobs_loses_none_and_recovers() {
    let Some(docker) = docker() else { return };
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::new(&docker, Kind::SmallStore, "store");
    stack.up();
    let gateway = Stack::gateway(GATEWAY_PORT);
    gateway.wait_ready().await;
    let case = "(j) JetStream store volume full";
    let started = Instant::now();

    // Jobs wait in the store: no worker takes them until the end.
    stack.compose(&["stop", "slow-worker"]);
    let load = Load::start("j", &gateway.base, photo(PHOTO), RATE);
    load.wait_accepted(15, Duration::from_secs(60)).await;
    let size = on_the_volume(&stack, "df --output=size -h /data | tail -1")
        .trim()
        .to_owned();
    on_the_volume(
        &stack,
        "avail=$(df --output=avail -B1 /data | tail -1); fallocate -l \"$avail\" /data/filler || true; \
         while head -c 65536 /dev/zero >> /data/filler 2>/dev/null; do :; done; true",
    );
    let full_at = Instant::now();

    // Refused, and clearly: 429 queue_full with Retry-After (the fast answer still given).
    let refusal = crate::support::eventually(Duration::from_secs(30), "a refusal", || async {
        let response = gateway.predict_raw(photo(PHOTO), "image/jpeg").await;
        let status = response.status();
        let retry_after = response.headers().get("retry-after").cloned();
        let body: Value = response.json().await.unwrap_or_default();
        if status == StatusCode::TOO_MANY_REQUESTS {
            Ok((body, retry_after))
        } else {
            Err(format!("{status} {}", body["error"]))
        }
    })
    .await;
    let (body, retry_after) = refusal;
    assert_eq!(body["error"]["code"], "queue_full", "{body}");
    assert!(retry_after.is_some(), "a refusal says when to retry");
    assert_eq!(
        body["fast"]["label"],
        crate::LABEL,
        "the fast answer comes with the refusal: {body}"
    );
    let accepted_when_full = load.accepted().len();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let accepted_while_full = load.accepted().len() - accepted_when_full;

    // Space returns: jobs are taken again (the load's refused submissions go through).
    on_the_volume(&stack, "rm -f /data/filler");
    let full_for = full_at.elapsed();
    wait_more_accepted(&load, 20).await;
    let submissions = load.stop().await;
    stack.compose(&["start", "slow-worker"]);
    let tally = tally_submissions(case, started, &gateway, &submissions, &[NATS_PORTS[0]]).await;
    tally.report_and_check(&format!(
        "{size} tmpfs volume, workers stopped; filled for {:.1} s: 429 queue_full (accepted meanwhile: \
         {accepted_while_full}); freed: taken again; workers started",
        full_for.as_secs_f64()
    ));

    stack.wait_all_healthy(Duration::from_secs(120)).await;
    // NATS says why it refused each write.
    stack.explain("no space left on device");
    stack.finish();
}
