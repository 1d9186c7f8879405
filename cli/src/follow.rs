//! Following a job to its end: its event stream (see `events`), reconnecting with
//! `Last-Event-ID` and a backoff (`backon`) when the connection drops.

use std::{
    cell::{Cell, RefCell},
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable as _};
use eventsource_stream::Event;
use futures::StreamExt as _;

use crate::{
    client::Api,
    error::CliError,
    events::{self, Update},
};

/// Reconnection attempts in a row that may fail before `follow` gives up.
const MAX_RECONNECTS: usize = 8;
/// The wait before reconnecting: from `FIRST_DELAY`, doubling at each failure in a row up to
/// `MAX_DELAY`, with jitter (the workspace's one policy, as in `tandem_core::retry`).
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);
/// The longest wait honoured when the gateway asks for one (`retry:`, `Retry-After`).
const MAX_SERVER_DELAY: Duration = Duration::from_secs(30);

/// What `follow` tells its caller.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The job changed.
    Update(&'a Update),
    /// The connection dropped; `follow` reconnects after a while.
    Reconnecting(Reconnecting<'a>),
}

/// A reconnection about to happen; as text, `<reason>; reconnecting in 0.2 s (try 1)`.
#[derive(Debug)]
pub struct Reconnecting<'a> {
    /// The how-manieth try in a row this is (from 1).
    pub attempt: u32,
    pub delay: Duration,
    /// Why the connection was lost.
    pub reason: &'a str,
}

impl fmt::Display for Reconnecting<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; reconnecting in {:.1} s (try {})",
            self.reason,
            self.delay.as_secs_f64(),
            self.attempt
        )
    }
}

/// Streams job `id`'s changes to `on_progress` until a final state, which it returns.
///
/// When the connection drops, ends early or stays silent for a minute, it reconnects with
/// `Last-Event-ID`, so no change is seen twice; it gives up after `MAX_RECONNECTS` failures in
/// a row. A gateway that cannot be reached at first, or a 4xx (an unknown job), ends it at once.
pub async fn follow(
    api: &Api,
    id: &str,
    on_progress: impl FnMut(Progress<'_>),
) -> Result<Update, CliError> {
    let watch = Watch {
        api,
        id,
        on_progress: RefCell::new(on_progress),
        last_event_id: RefCell::new(None),
        connected: Cell::new(false),
        server_delay: Cell::new(None),
        failures: Arc::new(AtomicU32::new(0)),
    };
    (|| watch.connect())
        .retry(Reconnects::new(Arc::clone(&watch.failures)))
        .when(|error| watch.worth_retrying(error))
        .adjust(|error, backoff| watch.delay(error, backoff))
        .notify(|error, delay| watch.reconnecting(error, delay))
        .await
}

/// The state `follow` keeps across connections.
struct Watch<'a, F> {
    api: &'a Api,
    id: &'a str,
    on_progress: RefCell<F>,
    /// The id of the last event seen, sent as `Last-Event-ID` when reconnecting.
    last_event_id: RefCell<Option<String>>,
    /// The gateway has answered once: only then is a failure worth another try.
    connected: Cell<bool>,
    /// The wait the gateway last asked for (`retry:` in the stream, `Retry-After`).
    server_delay: Cell<Option<Duration>>,
    /// Failures in a row; an event sets it back to 0, and the backoff with it. (Shared with
    /// `Reconnects`, which `backon` wants `Send`.)
    failures: Arc<AtomicU32>,
}

impl<F: FnMut(Progress<'_>)> Watch<'_, F> {
    /// One connection: its events until a final one (`Ok`), or why it ended before.
    async fn connect(&self) -> Result<Update, CliError> {
        let last_event_id = self.last_event_id.borrow().clone();
        let response = self.api.events(self.id, last_event_id.as_deref()).await?;
        self.connected.set(true);
        let mut events = std::pin::pin!(events::stream(response));
        let reason = loop {
            match events.next().await {
                None => break "the stream ended before a final state".to_owned(),
                Some(Err(reason)) => break reason,
                Some(Ok(event)) => {
                    if let Some(last) = self.receive(event)? {
                        return Ok(last);
                    }
                }
            }
        };
        Err(CliError::Disconnected(format!(
            "lost the event stream of job {} from {}: {reason}",
            self.id,
            self.api.base()
        )))
    }

    /// Reports one event; returns it when it is final.
    fn receive(&self, event: Event) -> Result<Option<Update>, CliError> {
        self.failures.store(0, Ordering::Relaxed);
        if event.retry.is_some() {
            self.server_delay.set(event.retry);
        }
        if !event.id.is_empty() {
            *self.last_event_id.borrow_mut() = Some(event.id.clone());
        }
        let update = Update::from_event(event)?;
        (self.on_progress.borrow_mut())(Progress::Update(&update));
        Ok(update.is_final().then_some(update))
    }

    fn worth_retrying(&self, error: &CliError) -> bool {
        // Reconnect only to a gateway that answered once: a wrong URL fails at once.
        self.connected.get() && worth_retrying(error)
    }

    /// The wait before the next try: the backoff's, or longer if the gateway asked.
    fn delay(&self, error: &CliError, backoff: Option<Duration>) -> Option<Duration> {
        if let CliError::Api {
            retry_after: Some(after),
            ..
        } = error
        {
            self.server_delay.set(Some(*after));
        }
        let backoff = backoff?;
        Some(
            self.server_delay
                .get()
                .map_or(backoff, |asked| asked.min(MAX_SERVER_DELAY).max(backoff)),
        )
    }

    fn reconnecting(&self, error: &CliError, delay: Duration) {
        let attempt = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let reason = match error {
            CliError::Unreachable { detail, .. } => format!("connection lost: {detail}"),
            other => other.to_string(),
        };
        (self.on_progress.borrow_mut())(Progress::Reconnecting(Reconnecting {
            attempt,
            delay,
            reason: &reason,
        }));
    }
}

/// The reconnection backoff: exponential from `FIRST_DELAY` to `MAX_DELAY` with jitter, at most
/// `MAX_RECONNECTS` times, started over whenever an event arrives (`failures` back at 0).
struct Reconnects {
    backoff: <ExponentialBuilder as BackoffBuilder>::Backoff,
    failures: Arc<AtomicU32>,
}

impl Reconnects {
    fn new(failures: Arc<AtomicU32>) -> Self {
        Self {
            backoff: Self::policy().build(),
            failures,
        }
    }

    fn policy() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(FIRST_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_jitter()
            .with_max_times(MAX_RECONNECTS)
    }
}

impl Iterator for Reconnects {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.failures.load(Ordering::Relaxed) == 0 {
            self.backoff = Self::policy().build();
        }
        self.backoff.next()
    }
}

/// A dropped connection, a gateway restarting (5xx) or busy (429) may pass; an unknown job
/// (404) or a bad request will not.
fn worth_retrying(error: &CliError) -> bool {
    match error {
        CliError::Unreachable { .. } | CliError::Disconnected(_) => true,
        CliError::Api { status, .. } => *status >= 500 || *status == 429,
        CliError::Usage(_)
        | CliError::Io { .. }
        | CliError::Protocol(_)
        | CliError::ModelServer { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_starts_over_after_an_event() {
        let failures = Arc::new(AtomicU32::new(0));
        let mut reconnects = Reconnects::new(Arc::clone(&failures));
        for _ in 0..MAX_RECONNECTS {
            let delay = reconnects.next().unwrap();
            assert!(delay <= MAX_DELAY * 2, "{delay:?}");
            failures.fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(reconnects.next(), None);
        failures.store(0, Ordering::Relaxed);
        let delay = reconnects.next().unwrap();
        assert!(delay <= FIRST_DELAY * 2, "{delay:?}");
    }

    /// A one-shot HTTP server on a thread: answers each connection with the next of
    /// `replies` (status line and headers, then a body ended by closing), and returns the
    /// `Last-Event-ID` each request carried.
    fn fake_gateway(
        replies: Vec<String>,
    ) -> (String, std::thread::JoinHandle<Vec<Option<String>>>) {
        use std::io::{BufRead as _, BufReader, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for reply in replies {
                let (socket, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(socket.try_clone().unwrap());
                let mut last_event_id = None;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("last-event-id")
                    {
                        last_event_id = Some(value.trim().to_owned());
                    }
                }
                seen.push(last_event_id);
                let mut socket = socket;
                socket.write_all(reply.as_bytes()).unwrap();
            }
            seen
        });
        (base, server)
    }

    const SSE_HEAD: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

    #[tokio::test]
    async fn follow_reconnects_after_the_last_event_it_saw() {
        let first = format!(
            "{SSE_HEAD}id: 3\nevent: queued\ndata: {{\"status\":\"queued\"}}\n\n\
             id: 4\nevent: running\ndata: {{\"status\":\"running\"}}\n\n"
        );
        let second = format!(
            "{SSE_HEAD}: keep-alive\n\nid: 6\nevent: succeeded\ndata: {{\"status\":\"succeeded\",\"slow\":{{\"label\":\"espresso\"}}}}\n\n"
        );
        let (base, server) = fake_gateway(vec![first, second]);
        let api = Api::new(&base, None).unwrap();
        let mut statuses = Vec::new();
        let mut reconnects = 0;
        let last = follow(&api, "job-1", |progress| match progress {
            Progress::Update(update) => statuses.push(update.status.clone()),
            Progress::Reconnecting(_) => reconnects += 1,
        })
        .await
        .unwrap();
        assert_eq!(statuses, ["queued", "running", "succeeded"]);
        assert_eq!(reconnects, 1);
        assert_eq!(last.record["slow"]["label"], "espresso");
        assert_eq!(last.revision.as_deref(), Some("6"));
        assert_eq!(server.join().unwrap(), [None, Some("4".to_owned())]);
    }

    #[tokio::test]
    async fn follow_waits_as_long_as_a_busy_gateway_asks() {
        let queued = format!("{SSE_HEAD}id: 3\ndata: {{\"status\":\"queued\"}}\n\n");
        let busy = "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
                    content-length: 0\r\nconnection: close\r\n\r\n"
            .to_owned();
        let done = format!("{SSE_HEAD}id: 5\ndata: {{\"status\":\"cancelled\"}}\n\n");
        let (base, server) = fake_gateway(vec![queued, busy, done]);
        let api = Api::new(&base, None).unwrap();
        let mut delays = Vec::new();
        let last = follow(&api, "job-1", |progress| {
            if let Progress::Reconnecting(reconnecting) = progress {
                delays.push((reconnecting.attempt, reconnecting.delay));
            }
        })
        .await
        .unwrap();
        assert_eq!(last.status, "cancelled");
        assert_eq!(delays.len(), 2, "{delays:?}");
        assert!(
            delays[0].0 == 1 && delays[0].1 < Duration::from_secs(1),
            "{delays:?}"
        );
        assert!(
            delays[1].0 == 2 && delays[1].1 >= Duration::from_secs(1),
            "{delays:?}"
        );
        let seen = server.join().unwrap();
        assert_eq!(seen, [None, Some("3".to_owned()), Some("3".to_owned())]);
    }

    #[tokio::test]
    async fn follow_stops_at_an_unknown_job() {
        let (base, server) = fake_gateway(vec![
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n\
             {\"error\":{\"code\":\"job_not_found\",\"message\":\"no job with id \\\"x\\\"\"}}"
                .to_owned(),
        ]);
        let api = Api::new(&base, None).unwrap();
        let error = follow(&api, "x", |_| {}).await.unwrap_err();
        assert_eq!(error.code(), "job_not_found");
        assert_eq!(error.exit_code(), crate::EXIT_FAILED);
        assert_eq!(
            error.to_string(),
            "no job with id \"x\" (job_not_found, HTTP 404)"
        );
        server.join().unwrap();
    }

    #[tokio::test]
    async fn follow_fails_at_once_when_the_gateway_never_answered() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let api = Api::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let mut reconnects = 0;
        let error = follow(&api, "x", |_| reconnects += 1).await.unwrap_err();
        assert!(matches!(error, CliError::Unreachable { .. }), "{error:?}");
        assert_eq!(error.exit_code(), crate::EXIT_USAGE);
        assert_eq!(reconnects, 0);
    }
}
