//! The load generator's clients: HTTP/1.1 keep-alive connections (hyper) for requests, and a
//! minimal raw-socket server-sent-events reader light enough to hold 10,000 streams open.

use std::{net::SocketAddr, time::Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, Request, StatusCode,
    client::conn::http1::{self, SendRequest},
    header,
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// One keep-alive HTTP/1.1 connection to the gateway.
#[derive(Debug)]
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    /// Connects (TCP_NODELAY, as browsers and HTTP libraries do).
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            host: addr.to_string(),
        })
    }

    /// Sends one request and reads the whole response body.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request.body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send(Method::GET, path, None, Bytes::new()).await
    }
}

/// `GET url` on a fresh connection (`url` = `http://host:port/path`).
pub async fn get_url(url: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not an http:// URL: {url}"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority.parse()?;
    let path = if path.is_empty() { "/" } else { path };
    Conn::connect(addr).await?.get(path).await
}

/// The job id of a `/predict` reply.
pub fn job_id(body: &[u8]) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    value["job_id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no job_id in {}", String::from_utf8_lossy(body)))
}

/// What the load generator reads from a `/predict` reply (parsed once).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PredictReply {
    /// `fast.inference_ms`: the gateway's model call.
    pub fast_inference_ms: Option<f64>,
    /// `escalated`: whether the job went on to the slow model.
    pub escalated: Option<bool>,
}

impl PredictReply {
    /// The reply's fields; all `None` when it is not JSON.
    pub fn of(body: &[u8]) -> Self {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(value) => Self {
                fast_inference_ms: value["fast"]["inference_ms"].as_f64(),
                escalated: value["escalated"].as_bool(),
            },
            Err(_) => Self::default(),
        }
    }
}

/// One open `GET /job/<id>/events` stream, read straight off the socket.
#[derive(Debug)]
pub struct SseStream {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Where the next `event:` line is looked for.
    cursor: usize,
}

/// The events that end a job's stream.
pub const FINAL_EVENTS: [&str; 3] = ["succeeded", "failed", "cancelled"];

impl SseStream {
    /// Opens the stream and checks the response is `200`.
    pub async fn open(addr: SocketAddr, job_id: &str) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET /job/{job_id}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut sse = Self {
            stream,
            buf: Vec::with_capacity(2048),
            cursor: 0,
        };
        while !sse.buf.windows(4).any(|w| w == b"\r\n\r\n") {
            sse.fill().await?;
        }
        if !sse.buf.starts_with(b"HTTP/1.1 200") {
            let head = String::from_utf8_lossy(&sse.buf[..sse.buf.len().min(200)]).into_owned();
            bail!("the events stream did not open: {head}");
        }
        Ok(sse)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the events stream ended");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Waits for the next event and returns its name, its data and when it arrived.
    pub async fn next_event(&mut self) -> anyhow::Result<(Event, Instant)> {
        loop {
            if let Some(event) = self.take_event() {
                return Ok((event, Instant::now()));
            }
            self.fill().await?;
        }
    }

    /// Waits for one of the final events (`succeeded`, `failed`, `cancelled`).
    pub async fn until_final(&mut self) -> anyhow::Result<(Event, Instant)> {
        loop {
            let (event, at) = self.next_event().await?;
            if FINAL_EVENTS.contains(&event.name.as_str()) {
                return Ok((event, at));
            }
        }
    }

    /// The next complete event after the cursor, if any.
    fn take_event(&mut self) -> Option<Event> {
        take_event(&self.buf, &mut self.cursor)
    }
}

/// One server-sent event: its name and its (one-line) data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

/// Finds the next `event: NAME\n` in `buf` from `cursor`, whose whole event (up to the blank
/// line that ends it) has arrived, and moves the cursor past it.
fn take_event(buf: &[u8], cursor: &mut usize) -> Option<Event> {
    const TAG: &[u8] = b"event: ";
    const DATA: &[u8] = b"data: ";
    let rest = buf.get(*cursor..)?;
    let at = rest.windows(TAG.len()).position(|w| w == TAG)?;
    let name_start = at + TAG.len();
    let name_len = rest[name_start..].iter().position(|&b| b == b'\n')?;
    let end = rest[name_start..]
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|e| name_start + e + 2)?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    let event = &rest[name_start..end];
    let data = event
        .windows(DATA.len())
        .position(|w| w == DATA)
        .map(|d| {
            let line = &event[d + DATA.len()..];
            text(&line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())])
        })
        .unwrap_or_default();
    *cursor += end;
    Some(Event {
        name: text(&rest[name_start..name_start + name_len]),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_taken_whole_and_in_order() {
        let mut cursor = 0;
        let mut buf = b"HTTP/1.1 200 OK\r\n\r\n1a\r\nevent: queued\nid: 1\ndata: {}\n".to_vec();
        assert_eq!(take_event(&buf, &mut cursor), None, "not ended yet");
        buf.extend_from_slice(b"\n\r\nevent: succ");
        let event = |name: &str, data: &str| {
            Some(Event {
                name: name.into(),
                data: data.into(),
            })
        };
        assert_eq!(take_event(&buf, &mut cursor), event("queued", "{}"));
        assert_eq!(take_event(&buf, &mut cursor), None);
        buf.extend_from_slice(b"eeded\nid: 2\ndata: {\"a\": 1}\n\n");
        assert_eq!(
            take_event(&buf, &mut cursor),
            event("succeeded", "{\"a\": 1}")
        );
        assert_eq!(take_event(&buf, &mut cursor), None);
    }

    #[test]
    fn replies_give_their_job_id_and_model_time() {
        let body = br#"{"job_id": "abc", "fast": {"inference_ms": 6.5}}"#;
        assert_eq!(job_id(body).unwrap(), "abc");
        assert_eq!(PredictReply::of(body).fast_inference_ms, Some(6.5));
        assert!(job_id(b"{}").is_err());
        assert_eq!(PredictReply::of(b"not json"), PredictReply::default());
        let reply = PredictReply::of(br#"{"escalated": false, "fast": {"inference_ms": 2}}"#);
        assert_eq!(
            (reply.escalated, reply.fast_inference_ms),
            (Some(false), Some(2.0))
        );
        assert_eq!(PredictReply::of(b"{}").escalated, None);
    }
}
