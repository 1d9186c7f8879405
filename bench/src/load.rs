//! Closed-loop load: N clients, each on its own keep-alive connection, sending the next request
//! as soon as the previous answer is in, for a fixed time.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::Method;

use crate::{
    client::{self, Conn},
    inputs::Photo,
    stats::ms_since,
};

/// One request, sent again and again: with photos, each in turn (every client starting at its
/// own), their bytes made unique each time; without, an empty body.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub photos: Vec<Photo>,
}

impl Call {
    /// `POST /predict` with the photo as a raw `image/*` body.
    pub fn predict(photo: &Photo) -> Self {
        Self::predict_each("/predict", std::slice::from_ref(photo))
    }

    /// `POST path` (`/predict?...`) with each of `photos` in turn as a raw `image/*` body.
    pub fn predict_each(path: &str, photos: &[Photo]) -> Self {
        Self {
            method: Method::POST,
            path: path.to_owned(),
            photos: photos.to_vec(),
        }
    }

    /// `GET /healthz`: the HTTP stack alone.
    pub fn healthz() -> Self {
        Self {
            method: Method::GET,
            path: "/healthz".to_owned(),
            photos: Vec::new(),
        }
    }
}

/// What a load run saw.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Latency of every successful request, milliseconds.
    pub latencies: Vec<f64>,
    /// `fast.inference_ms` of every `/predict` reply (the gateway's model call).
    pub model_call_ms: Vec<f64>,
    /// Requests answered with another status than 200, or failed.
    pub errors: u64,
    /// `/predict` replies saying `"escalated": true` (the job went on to the slow model).
    pub escalated: u64,
    /// Successful requests per second, from the replies of the window's last two thirds.
    pub per_sec: f64,
}

/// Runs `concurrency` clients sending `call` for `secs` seconds.
pub async fn run(
    addr: SocketAddr,
    call: &Call,
    concurrency: usize,
    secs: f64,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(secs);
    // Throughput counts the replies of the last two thirds only: every client is busy from the
    // start, but no reply arrives in the first round trip, which would bias a short window.
    let counted_from = started + Duration::from_secs_f64(secs / 3.0);
    let clients = (0..concurrency).map(|first| {
        let call = call.clone();
        tokio::spawn(async move { client_loop(addr, call, first, counted_from, end).await })
    });
    let mut outcome = Outcome::default();
    let mut finished_in_window = 0usize;
    for result in futures::future::join_all(clients).await {
        let (one, in_window) = result??;
        outcome.latencies.extend(one.latencies);
        outcome.model_call_ms.extend(one.model_call_ms);
        outcome.errors += one.errors;
        outcome.escalated += one.escalated;
        finished_in_window += in_window;
    }
    outcome.per_sec = finished_in_window as f64 / (secs * 2.0 / 3.0);
    Ok(outcome)
}

/// One client: sends `call` (from its photo `first` on) until `end`.
async fn client_loop(
    addr: SocketAddr,
    call: Call,
    first: usize,
    counted_from: Instant,
    end: Instant,
) -> anyhow::Result<(Outcome, usize)> {
    let mut conn = Conn::connect(addr).await?;
    let mut outcome = Outcome::default();
    let mut in_window = 0;
    let mut next = first;
    while Instant::now() < end {
        let photo = (!call.photos.is_empty()).then(|| &call.photos[next % call.photos.len()]);
        next += 1;
        let t = Instant::now();
        let sent = conn
            .send(
                call.method.clone(),
                &call.path,
                photo.map(|p| p.content_type),
                photo.map_or_else(Bytes::new, Photo::unique_bytes),
            )
            .await;
        match sent {
            Ok((status, body)) if status.is_success() => {
                outcome.latencies.push(ms_since(t));
                let now = Instant::now();
                if now >= counted_from && now <= end {
                    in_window += 1;
                }
                let reply = client::PredictReply::of(&body);
                if let Some(ms) = reply.fast_inference_ms {
                    outcome.model_call_ms.push(ms);
                }
                outcome.escalated += u64::from(reply.escalated == Some(true));
            }
            Ok(_) => outcome.errors += 1,
            Err(_) => {
                outcome.errors += 1;
                conn = Conn::connect(addr).await?;
            }
        }
    }
    Ok((outcome, in_window))
}
