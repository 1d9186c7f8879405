//! `docker-compose.cluster.yml`: three NATS nodes, streams and buckets in 3 replicas, and what the
//! loopback fault suite cannot do. Under load, with the tally, one after the other on one stack:
//! (k) one node stopped (`docker compose stop`), jobs go on, it is started and catches up; (l) the
//! jobs stream's leader cut off the network (`docker network disconnect`) and reconnected; (m) two
//! gateways (`gateway` and `gateway-2`, both in docker-compose.cluster.yml), each on its own
//! port: a job submitted through one is read and streamed to the end through the other, and
//! stopping either (under load through both) loses nothing.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use reqwest::StatusCode;
use serde_json::Value;
use tandem_core::nats::{JOBS_BUCKET, JOBS_STREAM};

use crate::{
    LABEL, PHOTO, RATE,
    docker::{GATEWAY_2_PORT, GATEWAY_PORT, Kind, NATS_PORTS, SERIAL, Stack, docker},
    faults::{jetstream_on, stop_and_tally, tally_submissions, wait_more_accepted},
    load::Load,
    support::{gateway::Gateway, photo},
};

/// The streams that must catch up: the jobs and the records (the bucket's stream).
fn replicated() -> [String; 2] {
    [JOBS_STREAM.to_owned(), format!("KV_{JOBS_BUCKET}")]
}

/// A stream's leader and how many of its followers are current (`None` while it has no leader).
async fn placement(js: &jetstream::Context, stream: &str) -> Option<(String, usize)> {
    let info = tokio::time::timeout(Duration::from_secs(5), async {
        js.get_stream(stream).await.ok()?.info().await.ok().cloned()
    })
    .await
    .ok()??;
    let cluster = info.cluster?;
    let leader = cluster.leader.filter(|l| !l.is_empty())?;
    Some((
        leader,
        cluster.replicas.iter().filter(|r| r.current).count(),
    ))
}

/// Waits until the replicated streams have a leader and two current followers.
async fn wait_caught_up(js: &jetstream::Context, timeout: Duration) -> Duration {
    let started = Instant::now();
    for stream in replicated() {
        loop {
            let seen = placement(js, &stream).await;
            if matches!(seen, Some((_, 2))) {
                break;
            }
            assert!(
                started.elapsed() < timeout,
                "{stream}: not caught up after {timeout:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    started.elapsed()
}

/// (k) One node stopped while jobs flow; started again, it catches up.
async fn one_node_stopped(stack: &Stack, gateway: &Gateway) {
    let case = "(k) cluster: one node stopped";
    let started = Instant::now();
    let load = Load::start("k", &gateway.base, photo(PHOTO), RATE);
    load.wait_accepted(10, Duration::from_secs(60)).await;
    stack.compose(&["stop", "nats-2"]);
    // Jobs go on with two nodes.
    wait_more_accepted(&load, 30).await;
    stack.compose(&["start", "nats-2"]);
    let js = jetstream_on(&NATS_PORTS).await;
    let caught_up = wait_caught_up(&js, Duration::from_secs(90)).await;
    let tally = stop_and_tally(case, started, gateway, load, &NATS_PORTS).await;
    tally.report_and_check(&format!(
        "nats-2 stopped; 30 jobs accepted on two nodes; started, caught up in {:.1} s",
        caught_up.as_secs_f64()
    ));
}

/// How long (l) keeps the node cut off while the load goes on.
const CUT_FOR: Duration = Duration::from_secs(12);

/// (l) The jobs stream's leader cut off the network while jobs flow, then reconnected. The
/// clients connected to it see no error, only silence, until the cut ends (or their NATS
/// client's ping timeout gives up on the connection), so jobs taken during the cut are counted,
/// not required.
async fn the_leader_cut_off_the_network(stack: &Stack, gateway: &Gateway) {
    let case = "(l) cluster: leader cut off the network";
    let started = Instant::now();
    let js = jetstream_on(&NATS_PORTS).await;
    let (leader, _) = placement(&js, JOBS_STREAM)
        .await
        .expect("the jobs stream has a leader");
    let load = Load::start("l", &gateway.base, photo(PHOTO), RATE);
    load.wait_accepted(10, Duration::from_secs(60)).await;
    let container = stack.containers(&leader).remove(0);
    let network = stack.network();
    let before = load.accepted().len();
    stack
        .docker
        .run(&["network", "disconnect", &network, &container]);
    tokio::time::sleep(CUT_FOR).await;
    let during = load.accepted().len() - before;
    let new_leader = placement(&js, JOBS_STREAM)
        .await
        .map_or_else(|| "none yet".to_owned(), |(l, _)| l);
    stack.docker.run(&[
        "network", "connect", "--alias", &leader, &network, &container,
    ]);
    let caught_up = wait_caught_up(&js, Duration::from_secs(120)).await;
    let tally = stop_and_tally(case, started, gateway, load, &NATS_PORTS).await;
    tally.report_and_check(&format!(
        "stream leader {leader} disconnected {} s (leader then: {new_leader}; {during} jobs accepted \
         during the cut); reconnected, caught up in {:.1} s",
        CUT_FOR.as_secs(),
        caught_up.as_secs_f64()
    ));
}

/// A job submitted through `one` is read, and streamed to the end, through `other`.
async fn submitted_through_one_read_and_streamed_through_the_other(one: &Gateway, other: &Gateway) {
    let response = one.predict_raw(photo(PHOTO), "image/jpeg").await;
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.unwrap();
    let id = reply["job_id"].as_str().unwrap().to_owned();
    let mut events = other.events(&id).await;
    assert_eq!(events.status, StatusCode::OK);
    let received = events.collect(Duration::from_secs(60)).await;
    let last = received.last().expect("events through the other gateway");
    assert_eq!(last.event, "succeeded", "{received:?}");
    assert_eq!(last.json()["slow"]["label"], LABEL);
    let (status, job) = other.job(&id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job[&id]["prediction"], LABEL, "{job}");
}

/// (m) Load through both gateways; each stopped and started in turn; every job read back
/// through the other one.
async fn either_gateway_stopped(stack: &Stack, first: &Gateway, second: &Gateway) {
    let case = "(m) cluster: two gateways, each stopped";
    let started = Instant::now();
    let one = Load::start("m1", &first.base, photo(PHOTO), RATE);
    let two = Load::start("m2", &second.base, photo(PHOTO), RATE);
    one.wait_accepted(10, Duration::from_secs(60)).await;
    two.wait_accepted(10, Duration::from_secs(60)).await;
    let mut downs = Vec::new();
    for (service, other_load) in [("gateway-2", &one), ("gateway", &two)] {
        let down = Instant::now();
        stack.compose(&["stop", service]);
        wait_more_accepted(other_load, 10).await;
        stack.compose(&["start", service]);
        let (restarted, _) = if service == "gateway" {
            (first, second)
        } else {
            (second, first)
        };
        restarted.wait_ready_for(Duration::from_secs(120)).await;
        downs.push(format!("{service} {:.1} s", down.elapsed().as_secs_f64()));
    }
    wait_more_accepted(&one, 10).await;
    wait_more_accepted(&two, 10).await;
    let mut submissions = one.stop().await;
    submissions.extend(two.stop().await);
    // Read through the other: the jobs taken through the second gateway are tallied through
    // the first, and both loads' through the second for the rest.
    let tally = tally_submissions(case, started, second, &submissions, &NATS_PORTS).await;
    tally.report_and_check(&format!(
        "load through both; stopped and started in turn: {}; every job read through gateway-2",
        downs.join(", ")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_stack_survives_a_node_stopped_cut_off_and_either_gateway_stopped() {
    let Some(docker) = docker() else { return };
    let _serial = SERIAL.lock().await;
    let mut stack = Stack::new(&docker, Kind::Cluster, "cluster");
    let took = stack.up();
    eprintln!(
        "compose: docker-compose.cluster.yml up --wait from nothing: {:.1} s",
        took.as_secs_f64()
    );
    stack.assert_all_healthy();
    let first = Stack::gateway(GATEWAY_PORT);
    let second = Stack::gateway(GATEWAY_2_PORT);
    first.wait_ready().await;
    second.wait_ready().await;
    let js = jetstream_on(&NATS_PORTS).await;
    wait_caught_up(&js, Duration::from_secs(60)).await;

    submitted_through_one_read_and_streamed_through_the_other(&first, &second).await;
    submitted_through_one_read_and_streamed_through_the_other(&second, &first).await;

    one_node_stopped(&stack, &first).await;
    stack.wait_all_healthy(Duration::from_secs(120)).await;
    the_leader_cut_off_the_network(&stack, &first).await;
    stack.wait_all_healthy(Duration::from_secs(120)).await;
    either_gateway_stopped(&stack, &first, &second).await;
    stack.wait_all_healthy(Duration::from_secs(120)).await;
    stack.assert_all_healthy();
    // A node stopped or cut off: the others keep trying their route to it (and cannot resolve
    // its name while it is stopped).
    stack.explain("Error trying to connect to route");
    stack.finish();
}
