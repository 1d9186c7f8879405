//! Case (e): Tandem on a 3-node NATS cluster (routes between three nats-server processes on
//! loopback; the jobs stream, the records bucket and the images store with 3 replicas) loses a
//! node, the jobs stream's leader, and gets it back.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use tandem_core::nats::{IMAGES_BUCKET, JOBS_BUCKET, JOBS_STREAM};

use crate::{
    LABEL, PHOTO, RATE, SERIAL, jetstream_on,
    load::Load,
    support::{
        app::{AppOptions, spawn_app_with},
        cluster::{ELECTION_LIMIT, NatsCluster},
        photo,
    },
    tally::tally,
    wait_more_accepted,
};

/// The stream's replicas, its leader and how many of its followers are current (retrying for a
/// while: during an election the stream may not answer).
async fn placement(js: &jetstream::Context, stream: &str) -> (usize, String, usize) {
    let started = Instant::now();
    loop {
        let info = match js.get_stream(stream).await {
            Ok(mut handle) => handle.info().await.cloned().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match info {
            Ok(info) => {
                let cluster = info.cluster.expect("a clustered stream");
                let current = cluster.replicas.iter().filter(|r| r.current).count();
                return (
                    info.config.num_replicas,
                    cluster.leader.unwrap_or_default(),
                    current,
                );
            }
            Err(e) => assert!(started.elapsed() < ELECTION_LIMIT, "stream {stream}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every replica of `stream` is current again (at most `timeout`).
async fn wait_current(js: &jetstream::Context, stream: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        let (_, leader, current) = placement(js, stream).await;
        if !leader.is_empty() && current == 2 {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{stream}: {current} of 2 followers current after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_nats_cluster_loses_a_node_and_gets_it_back() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await;
    // The app's own single nats-server is left idle: every service uses the cluster.
    let app = spawn_app_with(AppOptions {
        workers: 1,
        env: vec![
            ("TANDEM_NATS_URL".into(), cluster.url()),
            ("TANDEM_NATS_REPLICAS".into(), "3".into()),
            ("TANDEM_WORKER_CONCURRENCY".into(), "2".into()),
        ],
        ..Default::default()
    })
    .await;
    let js = jetstream_on(&cluster.url()).await;
    for stream in [
        JOBS_STREAM.to_owned(),
        format!("KV_{JOBS_BUCKET}"),
        format!("OBJ_{IMAGES_BUCKET}"),
    ] {
        let (replicas, _, _) = placement(&js, &stream).await;
        assert_eq!(replicas, 3, "{stream} has 3 replicas");
        wait_current(&js, &stream, ELECTION_LIMIT).await;
    }

    let load = Load::start("e", &app.base, photo(PHOTO), RATE);
    load.wait_accepted(20, Duration::from_secs(30)).await;
    let (_, leader, _) = placement(&js, JOBS_STREAM).await;
    let victim = cluster
        .index_of(&leader)
        .expect("the leader is one of the nodes");
    cluster.kill_node(victim);
    let down = Instant::now();
    // Jobs are taken and finished with one node down.
    wait_more_accepted(&load, 30).await;
    let (_, new_leader, _) = placement(&js, JOBS_STREAM).await;
    assert_ne!(new_leader, leader, "another node leads the stream");
    cluster.start_node(victim);
    cluster.wait_healthy(ELECTION_LIMIT).await;
    let outage = down.elapsed().as_secs_f64();
    wait_more_accepted(&load, 20).await;
    let submissions = load.stop().await;

    let tally = tally(
        "(e) 3-node cluster loses a node",
        started,
        &app,
        &js,
        &submissions,
        LABEL,
    )
    .await;
    if tally.lost > 0 {
        let consumer = js
            .get_stream(JOBS_STREAM)
            .await
            .unwrap()
            .get_consumer::<jetstream::consumer::pull::Config>(tandem_core::nats::WORKER_CONSUMER)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        eprintln!(
            "consumer: pending {} ack pending {} redelivered {} delivered {:?} ack floor {:?}",
            consumer.num_pending,
            consumer.num_ack_pending,
            consumer.num_redelivered,
            consumer.delivered,
            consumer.ack_floor
        );
    }
    // The node that came back has caught up.
    for stream in [JOBS_STREAM.to_owned(), format!("KV_{JOBS_BUCKET}")] {
        wait_current(&js, &stream, ELECTION_LIMIT).await;
    }
    tally.report_and_check(&format!(
        "R3 stream and buckets; stream leader {} SIGKILLed, back after {outage:.1} s, caught up",
        cluster.name(victim)
    ));
}
