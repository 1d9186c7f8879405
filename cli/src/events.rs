//! A job's event stream, one connection of it: the Server-Sent Events of
//! `GET /job/<id>/events` (parsed by `eventsource-stream`), each a change of the job.

use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures::{Stream, StreamExt as _};
use serde_json::Value;

use crate::error::{CliError, describe_transport};

/// The job states after which nothing changes (the gateway then ends the stream).
const FINAL_STATES: [&str; 4] = ["succeeded", "failed", "cancelled", "expired"];

/// How long a connection may stay silent before it is presumed dead. The gateway sends a
/// keep-alive comment every 15 s by default.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One change of a job: an event of its stream.
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
    /// The revision as a number, as `--json` prints it.
    pub fn revision_number(&self) -> Option<u64> {
        self.revision.as_deref().and_then(|r| r.parse().ok())
    }

    /// Nothing will change after this.
    pub fn is_final(&self) -> bool {
        FINAL_STATES.contains(&self.status.as_str())
    }

    /// An event's job record, its status (the event type when the record has none) and
    /// revision.
    pub fn from_event(event: Event) -> Result<Self, CliError> {
        let record: Value = serde_json::from_str(&event.data).map_err(|e| {
            CliError::Protocol(format!("an event's data is not a job record ({e})"))
        })?;
        let status = match record["status"].as_str() {
            Some(status) => status.to_owned(),
            None => event.event,
        };
        Ok(Self {
            revision: (!event.id.is_empty()).then_some(event.id),
            status,
            record,
        })
    }
}

/// The events of an open event stream, until it ends; an error says in a few words why it
/// broke (a dropped connection, a minute of silence), and is its last item.
pub fn stream(response: reqwest::Response) -> impl Stream<Item = Result<Event, String>> {
    from_body(response.bytes_stream())
}

fn from_body<B: AsRef<[u8]>>(
    body: impl Stream<Item = reqwest::Result<B>> + Unpin,
) -> impl Stream<Item = Result<Event, String>> {
    with_idle_timeout(body)
        .eventsource()
        .map(|event| event.map_err(|e| describe(&e)))
}

/// Why a connection's bytes stopped coming.
#[derive(Debug)]
enum Broken {
    /// Nothing, not even a keep-alive, for `IDLE_TIMEOUT`.
    Idle,
    Transport(reqwest::Error),
}

/// `body`, ending with `Broken::Idle` when it stays silent for `IDLE_TIMEOUT`.
fn with_idle_timeout<B>(
    body: impl Stream<Item = reqwest::Result<B>> + Unpin,
) -> impl Stream<Item = Result<B, Broken>> {
    futures::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        match tokio::time::timeout(IDLE_TIMEOUT, body.next()).await {
            Err(_) => Some((Err(Broken::Idle), None)),
            Ok(None) => None,
            Ok(Some(chunk)) => Some((chunk.map_err(Broken::Transport), Some(body))),
        }
    })
}

fn describe(error: &EventStreamError<Broken>) -> String {
    match error {
        EventStreamError::Transport(Broken::Idle) => "no data for a minute".to_owned(),
        EventStreamError::Transport(Broken::Transport(e)) => describe_transport(e),
        EventStreamError::Utf8(e) => format!("the stream is not UTF-8 ({e})"),
        EventStreamError::Parser(e) => format!("the stream is not an event stream ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of a body cut into `chunks`.
    async fn events(chunks: Vec<&'static [u8]>) -> Vec<(String, String, String)> {
        let body = futures::stream::iter(chunks.into_iter().map(reqwest::Result::Ok));
        from_body(body)
            .map(|event| {
                let event = event.unwrap();
                (event.id, event.event, event.data)
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn parses_events_split_anywhere() {
        let stream: &'static [u8] = b": keep-alive\n\nid: 3\nevent: queued\ndata: {\"a\":1}\n\nid: 5\r\nevent: succeeded\r\ndata: x\r\ndata:y\r\n\r\n:c\rdata\r\rid: 6\ndata: z\n\n";
        let owned = |(id, event, data): (&str, &str, &str)| {
            (id.to_owned(), event.to_owned(), data.to_owned())
        };
        let expected: Vec<_> = [
            ("3", "queued", "{\"a\":1}"),
            ("5", "succeeded", "x\ny"),
            ("5", "message", ""),
            ("6", "message", "z"),
        ]
        .map(owned)
        .into();
        // Whole, and cut at every byte (a CRLF split across chunks included).
        assert_eq!(events(vec![stream]).await, expected);
        for cut in 0..stream.len() {
            let parts = vec![&stream[..cut], &stream[cut..]];
            assert_eq!(events(parts).await, expected, "cut at {cut}");
        }
    }

    #[test]
    fn the_status_comes_from_the_record() {
        let event = |id: &str, data: &str| Event {
            id: id.to_owned(),
            event: "failed".to_owned(),
            data: data.to_owned(),
            retry: None,
        };
        let update = Update::from_event(event("9", r#"{"status":"failed"}"#)).unwrap();
        assert!(update.is_final());
        assert_eq!(update.revision.as_deref(), Some("9"));
        assert!(Update::from_event(event("", "not json")).is_err());
    }
}
