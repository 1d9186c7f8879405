//! Server-Sent Events: a parser of the `text/event-stream` format, and `follow`, which streams a
//! job's changes until it is final, reconnecting with `Last-Event-ID` when the connection drops.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::Value;

use super::{
    client::Api,
    error::{CliError, describe_transport},
};

/// The job states after which nothing changes (the gateway then ends the stream).
pub const FINAL_STATES: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// How long a connection may stay silent before it is presumed dead. The gateway sends a
/// keep-alive comment every 15 s by default.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Reconnection attempts in a row that may fail before `follow` gives up.
const MAX_RECONNECTS: u32 = 8;
/// The first wait before reconnecting; it doubles at each failure in a row, up to `MAX_DELAY`.
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The last event id the stream set (here, the record's revision).
    pub id: Option<String>,
    /// The event type (here, the job's status); `message` when the stream names none.
    pub event: String,
    pub data: String,
}

/// An incremental parser of `text/event-stream` bytes (lines end in LF, CRLF or CR).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    last_id: Option<String>,
    event: String,
    data: String,
    has_data: bool,
    /// The reconnection delay the server asked for (`retry:`), if any.
    pub retry: Option<Duration>,
}

impl SseParser {
    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line(&line) {
                        events.push(event);
                    }
                }
                _ => self.line.push(byte),
            }
        }
        events
    }

    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(b":") {
            return None; // A comment: the gateway's keep-alives.
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent {
            id: self.last_id.clone(),
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
        })
    }
}

/// One change of a job, as `follow` reports it.
#[derive(Debug, Clone)]
pub struct Update {
    /// The record's revision (the event id).
    pub revision: Option<String>,
    /// The job's status (the event type).
    pub status: String,
    /// The job's record.
    pub record: Value,
}

impl Update {
    /// Nothing will change after this.
    pub fn is_final(&self) -> bool {
        FINAL_STATES.contains(&self.status.as_str())
    }
}

/// What `follow` tells its caller.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The job changed.
    Update(&'a Update),
    /// The connection dropped; `follow` reconnects after `delay`.
    Reconnecting {
        attempt: u32,
        delay: Duration,
        reason: &'a str,
    },
}

/// Streams job `id`'s changes to `on_progress` until a final state, which it returns.
///
/// When the connection drops, ends early or stays silent for a minute, it reconnects with
/// `Last-Event-ID`, so no change is seen twice; it gives up after `MAX_RECONNECTS` failures in
/// a row. A gateway that cannot be reached at first, or a 4xx (an unknown job), ends it at once.
pub async fn follow(
    api: &Api,
    id: &str,
    mut on_progress: impl FnMut(Progress<'_>),
) -> Result<Update, CliError> {
    let mut last_event_id: Option<String> = None;
    let mut failures: u32 = 0;
    let mut server_delay: Option<Duration> = None;
    let mut connected = false;
    loop {
        let failure = match api.events(id, last_event_id.as_deref()).await {
            Ok(response) => {
                connected = true;
                let mut parser = SseParser::default();
                let mut body = response.bytes_stream();
                let reason = loop {
                    let chunk = match tokio::time::timeout(IDLE_TIMEOUT, body.next()).await {
                        Err(_) => break "no data for a minute".to_owned(),
                        Ok(None) => break "the stream ended before a final state".to_owned(),
                        Ok(Some(Err(e))) => break describe_transport(&e),
                        Ok(Some(Ok(chunk))) => chunk,
                    };
                    for event in parser.push(&chunk) {
                        failures = 0;
                        if event.id.is_some() {
                            last_event_id.clone_from(&event.id);
                        }
                        let update = to_update(event)?;
                        on_progress(Progress::Update(&update));
                        if update.is_final() {
                            return Ok(update);
                        }
                    }
                };
                server_delay = parser.retry.or(server_delay);
                CliError::Disconnected(format!(
                    "lost the event stream of job {id} from {}: {reason}",
                    api.base()
                ))
            }
            // Reconnect only to a gateway that answered once: a wrong URL fails at once.
            Err(e) if !connected || !worth_retrying(&e) => return Err(e),
            Err(e) => {
                if let CliError::Api {
                    retry_after: Some(after),
                    ..
                } = &e
                {
                    server_delay = Some(*after);
                }
                e
            }
        };
        failures += 1;
        if failures > MAX_RECONNECTS {
            return Err(failure);
        }
        let backoff = FIRST_DELAY
            .saturating_mul(1 << (failures - 1).min(5))
            .min(MAX_DELAY);
        let delay = server_delay.map_or(backoff, |d| d.clamp(backoff, MAX_DELAY * 6));
        on_progress(Progress::Reconnecting {
            attempt: failures,
            delay,
            reason: &match &failure {
                CliError::Unreachable { detail, .. } => format!("connection lost: {detail}"),
                other => other.to_string(),
            },
        });
        tokio::time::sleep(delay).await;
    }
}

/// A dropped connection, a gateway restarting (5xx) or busy (429) may pass; an unknown job
/// (404) or a bad request will not.
fn worth_retrying(error: &CliError) -> bool {
    match error {
        CliError::Unreachable { .. } | CliError::Disconnected(_) => true,
        CliError::Api { status, .. } => *status >= 500 || *status == 429,
        CliError::Usage(_) | CliError::Io { .. } | CliError::Protocol(_) => false,
    }
}

fn to_update(event: SseEvent) -> Result<Update, CliError> {
    let record: Value = serde_json::from_str(&event.data)
        .map_err(|e| CliError::Protocol(format!("an event's data is not a job record ({e})")))?;
    let status = match record["status"].as_str() {
        Some(status) => status.to_owned(),
        None => event.event,
    };
    Ok(Update {
        revision: event.id,
        status,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>, event: &str, data: &str) -> SseEvent {
        SseEvent {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn parses_events_split_anywhere() {
        let stream = b": keep-alive\n\nid: 3\nevent: queued\ndata: {\"a\":1}\n\nid: 5\r\nevent: succeeded\r\ndata: x\r\ndata:y\r\n\r\n";
        let expected = vec![
            event(Some("3"), "queued", "{\"a\":1}"),
            event(Some("5"), "succeeded", "x\ny"),
        ];
        // Whole, and cut at every byte (a CRLF split across chunks included).
        assert_eq!(SseParser::default().push(stream), expected);
        for cut in 0..stream.len() {
            let mut parser = SseParser::default();
            let mut events = parser.push(&stream[..cut]);
            events.extend(parser.push(&stream[cut..]));
            assert_eq!(events, expected, "cut at {cut}");
        }
    }

    #[test]
    fn ids_persist_comments_and_empty_events_are_skipped() {
        let mut parser = SseParser::default();
        let events = parser.push(b"id: 7\n\ndata: a\n\r:c\rdata\rretry: 1500\r\r");
        assert_eq!(
            events,
            vec![
                event(Some("7"), "message", "a"),
                event(Some("7"), "message", "")
            ]
        );
        assert_eq!(parser.retry, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn the_status_comes_from_the_record() {
        let update = to_update(event(Some("9"), "failed", r#"{"status":"failed"}"#)).unwrap();
        assert!(update.is_final());
        assert_eq!(update.revision.as_deref(), Some("9"));
        assert!(to_update(event(None, "queued", "not json")).is_err());
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
            Progress::Reconnecting { .. } => reconnects += 1,
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
    async fn follow_stops_at_an_unknown_job() {
        let (base, server) = fake_gateway(vec![
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n\
             {\"error\":{\"code\":\"job_not_found\",\"message\":\"no job with id \\\"x\\\"\"}}"
                .to_owned(),
        ]);
        let api = Api::new(&base, None).unwrap();
        let error = follow(&api, "x", |_| {}).await.unwrap_err();
        assert_eq!(error.code(), "job_not_found");
        assert_eq!(error.exit_code(), crate::cli::EXIT_FAILED);
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
        assert_eq!(error.exit_code(), crate::cli::EXIT_USAGE);
        assert_eq!(reconnects, 0);
    }
}
