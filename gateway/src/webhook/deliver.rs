//! Delivering webhook events: one task per gateway (with webhooks on) pulls from the shared
//! durable consumer `webhook-senders` on `TANDEM_WEBHOOKS`, and POSTs each event, signed.
//!
//! Each attempt re-checks the URL (DNS can change since submission) and connects to the address
//! it checked; redirects are not followed, a proxy is never used, only a few KiB of the answer
//! are read. A 2xx answer acknowledges the message; an error, a non-2xx answer or a timeout
//! naks it with a growing delay, up to `TANDEM_WEBHOOK_MAX_ATTEMPTS`, then it is terminated.
//! Every attempt is written into the record's `webhooks` before the message is acknowledged, so
//! a gateway killed mid-delivery leaves the message to be redelivered to another (after the
//! ack wait), and a duplicate of an event already delivered is dropped unsent.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, Message};
use tandem_core::{
    job::{JobId, JobRecord},
    nats::{self as contract, NatsSettings, headers},
    pull::FetchLoop,
    retry,
    store::JobStore,
    webhook::{WebhookDelivery, WebhookEvent},
};

use super::{WebhookConfig, policy::Refusal};
use crate::queue::Queue;

/// At most this much of a receiver's answer is read (and none of it kept).
const MAX_ANSWER_BYTES: usize = 4 * 1024;
/// The `user-agent` of deliveries.
const USER_AGENT: &str = concat!("tandem-webhooks/", env!("CARGO_PKG_VERSION"));

/// What one attempt came to.
#[derive(Debug)]
enum Attempt {
    /// 2xx.
    Delivered(u16),
    /// Try again later: an error, a timeout or a non-2xx answer.
    Failed(Option<u16>, String),
    /// Never going to work (the URL is no longer allowed).
    Refused(String),
}

/// Runs the delivery task until aborted (the gateway stopping: deliveries in flight are left
/// unacknowledged and redelivered).
pub async fn run(queue: Queue, config: Arc<WebhookConfig>, settings: NatsSettings) {
    let jetstream = queue.wait_for_jetstream().await;
    let (js, store) = (jetstream.js.clone(), jetstream.store.clone());
    let consumer = retry::until_ok("webhook consumer set-up", || {
        contract::ensure_webhook_consumer(&js, &settings)
    })
    .await;
    tracing::info!(
        concurrency = config.concurrency,
        "delivering webhooks from {}",
        contract::WEBHOOKS_STREAM
    );
    // In-progress acks while a delivery runs, often enough for the consumer's ack wait.
    let progress = (config.timeout.min(settings.ack_wait) / 3).max(Duration::from_millis(100));
    // Runs until aborted: the deliveries in flight then are dropped with it.
    let _running = FetchLoop {
        what: "webhook events",
        consumer,
        recreate: || contract::ensure_webhook_consumer(&js, &settings),
        concurrency: config.concurrency,
    }
    .run(
        |msg| {
            let (config, store) = (config.clone(), store.clone());
            async move { deliver(&config, &store, msg, progress).await }
        },
        std::future::pending::<()>(),
    )
    .await;
}

/// One delivery attempt of one message, to its end (acknowledged, nak'ed or terminated).
#[tracing::instrument(name = "webhook.deliver", skip_all, fields(job_id, event, attempt))]
async fn deliver(config: &WebhookConfig, store: &JobStore, msg: Message, progress: Duration) {
    let attempt = msg
        .info()
        .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let event = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(headers::WEBHOOK_EVENT))
        .and_then(|v| v.as_str().parse::<WebhookEvent>().ok());
    let record = serde_json::from_slice::<JobRecord>(&msg.payload).ok();
    let (Some(event), Some(record)) = (event, record) else {
        tracing::warn!("terminating a message that is not a webhook event");
        ack(&msg, AckKind::Term).await;
        return;
    };
    let span = tracing::Span::current();
    span.record("job_id", tracing::field::display(record.id));
    span.record("event", event.as_str());
    span.record("attempt", attempt);
    let Some(url) = record.webhook.clone() else {
        ack(&msg, AckKind::Term).await;
        return;
    };
    let id = event.message_id(record.id);

    if already_settled(config, store, record.id, event).await {
        ack(&msg, AckKind::Ack).await;
        return;
    }
    if attempt > config.max_attempts {
        // The last attempt's gateway died before recording it.
        let reason = format!("gave up after {} attempts", config.max_attempts);
        note(store, record.id, event, &id, config.max_attempts, |d| {
            d.last_error = Some(reason.clone());
        })
        .await;
        ack(&msg, AckKind::Term).await;
        return;
    }

    // The body is the job view of the record as it was when the event happened: the same
    // bytes on every attempt.
    let body = serde_json::to_vec(&crate::replies::JobView::new(&record)).unwrap_or_default();
    let outcome = with_progress_acks(&msg, progress, attempt_once(config, &url, &id, body)).await;
    metrics::counter!("tandem_webhook_attempts_total", "outcome" => match &outcome {
        Attempt::Delivered(_) => "delivered",
        Attempt::Failed(..) => "failed",
        Attempt::Refused(_) => "refused",
    })
    .increment(1);
    let delivery = Delivery {
        store,
        job: record.id,
        event,
        id: &id,
        attempt,
    };
    settle(config, &msg, &delivery, outcome).await;
}

/// A duplicate (emitted again after the de-duplication window) or a redelivery of an event
/// the record shows delivered or given up: nothing to send.
async fn already_settled(
    config: &WebhookConfig,
    store: &JobStore,
    job: JobId,
    event: WebhookEvent,
) -> bool {
    let Ok(Some(current)) = store.get(job).await else {
        return false;
    };
    let settled = current
        .record
        .webhooks
        .iter()
        .find(|d| d.event == event && (d.delivered || d.attempts >= config.max_attempts));
    if let Some(done) = settled {
        tracing::debug!(delivered = done.delivered, "webhook event already settled");
    }
    settled.is_some()
}

/// Runs `call`, telling JetStream every `period` that the message is still being worked on.
async fn with_progress_acks(
    msg: &Message,
    period: Duration,
    call: impl Future<Output = Attempt>,
) -> Attempt {
    tokio::pin!(call);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            outcome = &mut call => return outcome,
            _ = ticker.tick() => ack(msg, AckKind::Progress).await,
        }
    }
}

/// One attempt at one event, for recording it.
struct Delivery<'a> {
    store: &'a JobStore,
    job: JobId,
    event: WebhookEvent,
    /// The `webhook-id`.
    id: &'a str,
    attempt: u32,
}

impl Delivery<'_> {
    async fn note(&self, change: impl Fn(&mut WebhookDelivery)) {
        note(
            self.store,
            self.job,
            self.event,
            self.id,
            self.attempt,
            change,
        )
        .await;
    }
}

/// Records how the attempt went, then acknowledges, retries later (nak) or gives up (term).
async fn settle(config: &WebhookConfig, msg: &Message, delivery: &Delivery<'_>, outcome: Attempt) {
    let attempt = delivery.attempt;
    match outcome {
        Attempt::Delivered(status) => {
            delivery
                .note(|d| {
                    d.delivered = true;
                    d.last_status = Some(status);
                    d.last_error = None;
                })
                .await;
            if let Err(e) = msg.double_ack().await {
                tracing::warn!(error = %e, "webhook ack not confirmed; a redelivery is dropped unsent");
            }
            tracing::info!(status, "webhook delivered");
        }
        Attempt::Refused(reason) => {
            tracing::warn!(%reason, "webhook refused at delivery");
            delivery
                .note(|d| {
                    d.last_status = None;
                    d.last_error = Some(format!("refused: {reason}"));
                })
                .await;
            ack(msg, AckKind::Term).await;
        }
        Attempt::Failed(status, reason) if attempt >= config.max_attempts => {
            tracing::warn!(%reason, attempt, "webhook failed; giving up");
            delivery
                .note(|d| {
                    d.last_status = status;
                    d.last_error = Some(format!("gave up after {attempt} attempts: {reason}"));
                })
                .await;
            ack(msg, AckKind::Term).await;
        }
        Attempt::Failed(status, reason) => {
            let delay = config.retry_delay(attempt);
            tracing::info!(%reason, retry_in = ?delay, "webhook failed; will retry");
            delivery
                .note(|d| {
                    d.last_status = status;
                    d.last_error = Some(reason.clone());
                })
                .await;
            ack(msg, AckKind::Nak(Some(delay))).await;
        }
    }
}

/// Checks the URL again, then POSTs `body` signed, to the checked address.
async fn attempt_once(config: &WebhookConfig, url: &str, id: &str, body: Vec<u8>) -> Attempt {
    let checked = match config.allow.check(url).await {
        Ok(checked) => checked,
        Err(refusal @ Refusal::Unresolved(..)) => {
            return Attempt::Failed(None, refusal.to_string());
        }
        Err(refusal) => return Attempt::Refused(refusal.to_string()),
    };
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(config.connect_timeout)
        .timeout(config.timeout)
        .user_agent(USER_AGENT);
    if let Some(name) = &checked.host_name {
        // Connect to the address just checked, not to whatever a second lookup would say.
        client = client.resolve(name, checked.addr);
    }
    let client = match client.build() {
        Ok(client) => client,
        Err(e) => return Attempt::Failed(None, format!("HTTP client: {e}")),
    };
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature = config.secrets.sign(id, timestamp, &body);
    let sent = client
        .post(checked.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return Attempt::Failed(None, describe(&e)),
    };
    let status = response.status();
    // Read a little of the answer (a keep-alive connection wants it drained), never more.
    let mut read = 0;
    while read < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
    if status.is_success() {
        Attempt::Delivered(status.as_u16())
    } else if status.is_redirection() {
        Attempt::Failed(
            Some(status.as_u16()),
            format!("answered {status}; redirects are not followed"),
        )
    } else {
        Attempt::Failed(Some(status.as_u16()), format!("answered {status}"))
    }
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    match e.source() {
        Some(source) => format!("{kind}: {source}"),
        None => format!("{kind}: {e}"),
    }
}

/// Writes how the event's delivery stands into the job record (best effort: the delivery
/// itself matters more than its note).
async fn note(
    store: &JobStore,
    job: JobId,
    event: WebhookEvent,
    id: &str,
    attempts: u32,
    change: impl Fn(&mut WebhookDelivery),
) {
    let written = store
        .update(job, |record| {
            let index = match record.webhooks.iter().position(|d| d.event == event) {
                Some(index) => index,
                None => {
                    record.webhooks.push(WebhookDelivery {
                        event,
                        id: id.to_owned(),
                        delivered: false,
                        attempts: 0,
                        last_status: None,
                        last_error: None,
                    });
                    record.webhooks.len() - 1
                }
            };
            let entry = &mut record.webhooks[index];
            if entry.delivered {
                return false;
            }
            entry.attempts = entry.attempts.max(attempts);
            change(entry);
            true
        })
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "webhook delivery not recorded in the job record");
    }
}

async fn ack(msg: &Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(error = %e, "could not acknowledge webhook message");
    }
}
