//! Row f: thousands of clients on one job's event stream: the gateway's memory, and how long one
//! result takes to reach all of them.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use hyper::Method;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc};

use crate::{
    Settings,
    client::{self, Conn, SseStream},
    inputs::Photo,
    procs::{Env, Gateway, ModelServer, Nats, Worker},
    stats::{Summary, rss_mib},
};

/// Connections being opened at once (the gateway's listen backlog is 1024).
const OPENING_AT_ONCE: usize = 256;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Fanout {
    pub clients: usize,
    /// Streams that opened and got the job's first event.
    pub connected: usize,
    pub connect_secs: f64,
    /// Gateway `VmRSS` before the streams, with them all open, and its peak (`VmHWM`) at the end.
    pub rss_idle_mib: f64,
    pub rss_connected_mib: f64,
    pub rss_peak_mib: f64,
    /// From the worker's `finished_at` (the result about to be stored) to each client's receipt.
    pub delivery: Summary,
    /// From the first client's receipt to the last's.
    pub spread_ms: f64,
    /// Streams that did not get `succeeded`.
    pub missed: usize,
}

/// Opens `settings.sse_clients` streams on one queued job, then lets a worker finish it.
pub async fn fanout(
    settings: &Settings,
    env: &Env,
    model_server: &ModelServer,
    tiny: &Photo,
) -> anyhow::Result<Fanout> {
    let nats = Nats::start(env).await?;
    let gateway = Gateway::start(env, &nats, &model_server.url, "null").await?;
    let addr = gateway.addr;
    let mut conn = Conn::connect(addr).await?;
    let (status, body) = conn
        .send(
            Method::POST,
            "/predict",
            Some(tiny.content_type),
            tiny.bytes.clone(),
        )
        .await?;
    anyhow::ensure!(status.is_success(), "/predict answered {status}");
    let id = client::job_id(&body)?;
    let pid = gateway.proc.pid();
    let (rss_idle_mib, _) = rss_mib(pid).context("gateway RSS")?;

    let clients = settings.sse_clients;
    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<bool>();
    let started = Instant::now();
    let streams: Vec<_> = (0..clients)
        .map(|_| {
            let (opening, ready_tx, id) = (opening.clone(), ready_tx.clone(), id.clone());
            tokio::spawn(async move {
                let permit = opening.acquire_owned().await?;
                let opened = async {
                    let mut events = SseStream::open(addr, &id).await?;
                    events.next_event().await?;
                    anyhow::Ok(events)
                }
                .await;
                drop(permit);
                let _ = ready_tx.send(opened.is_ok());
                let (event, at) = opened?.until_final().await?;
                anyhow::ensure!(event.name == "succeeded", "ended {}", event.name);
                anyhow::Ok(at)
            })
        })
        .collect();
    drop(ready_tx);
    let mut connected = 0;
    for _ in 0..clients {
        match tokio::time::timeout(Duration::from_secs(120), ready.recv()).await {
            Ok(Some(true)) => connected += 1,
            Ok(Some(false)) => {}
            _ => break,
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the gateway settle, then read its memory with every stream open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_connected_mib, _) = rss_mib(pid).context("gateway RSS")?;
    println!(
        "  f. {connected}/{clients} streams open in {connect_secs:.1} s; gateway RSS {rss_idle_mib:.1} -> {rss_connected_mib:.1} MiB"
    );

    let anchor = (Instant::now(), SystemTime::now());
    let worker = Worker::start(env, &nats, &model_server.url, "null", 1).await?;
    let mut receipts = Vec::new();
    let mut missed = 0;
    for stream in streams {
        match tokio::time::timeout(Duration::from_secs(60), stream).await {
            Ok(Ok(Ok(at))) => receipts.push(at),
            _ => missed += 1,
        }
    }
    let (_, rss_peak_mib) = rss_mib(pid).context("gateway RSS")?;
    let (_, body) = conn.get(&format!("/job/{id}")).await?;
    let record: serde_json::Value = serde_json::from_slice(&body)?;
    let finished = record["finished_at"]
        .as_str()
        .context("the job has no finished_at")?;
    let finished = OffsetDateTime::parse(finished, &time::format_description::well_known::Rfc3339)?;
    // The worker's wall-clock finish, on this process's monotonic clock.
    let since_anchor = SystemTime::from(finished)
        .duration_since(anchor.1)
        .unwrap_or_default();
    let finished_at = anchor.0 + since_anchor;
    let delivery: Vec<f64> = receipts
        .iter()
        .map(|at| at.saturating_duration_since(finished_at).as_secs_f64() * 1000.0)
        .collect();
    let first = receipts.iter().min().copied();
    let last = receipts.iter().max().copied();
    let spread_ms = match (first, last) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64() * 1000.0,
        _ => 0.0,
    };
    let result = Fanout {
        clients,
        connected,
        connect_secs: crate::stats::round3(connect_secs),
        rss_idle_mib,
        rss_connected_mib,
        rss_peak_mib,
        delivery: Summary::of(&delivery),
        spread_ms: crate::stats::round3(spread_ms),
        missed,
    };
    println!(
        "  f. delivered to {} in {:.1} ms (p50 {:.1} ms), {} missed; gateway peak RSS {:.1} MiB",
        receipts.len(),
        result.delivery.max_ms,
        result.delivery.p50_ms,
        missed,
        rss_peak_mib
    );
    worker.proc.stop().await;
    gateway.proc.stop().await;
    nats.proc.stop().await;
    Ok(result)
}
