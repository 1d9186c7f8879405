//! Clients that hold a connection without making progress: silent or slow request headers
//! (cut off after `TANDEM_HEADER_READ_TIMEOUT_SECS`), and an event-stream reader that stops
//! reading (cut off after `TANDEM_STALLED_WRITE_TIMEOUT_SECS`, without holding up anyone else).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use tandem_core::{job::JobStatus, nats::JOBS_BUCKET, store::JobStore};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
};

use super::{app_with, assert_still_serves};
use crate::{
    slow_path::{jetstream, submit},
    support::{app::TestApp, eventually},
};

fn addr(app: &TestApp) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// Sends `head`, then `body` over and over (up to 32 MB, until the server stops taking it), and
/// returns the response's status and body; the server must answer within 10 s.
pub async fn exchange(app: &TestApp, head: &[u8], body: &[u8]) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr(app)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head).await.unwrap();
    let body = body.to_vec();
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        while !body.is_empty() && sent < 32 << 20 {
            if writer.write_all(&body).await.is_err() {
                break;
            }
            sent += body.len();
        }
        writer
    });
    let mut received = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let read = async {
        loop {
            if let Some(end) = find(&received, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|n| n.trim().parse::<usize>().ok());
                if length.is_some_and(|n| received.len() >= end + 4 + n) {
                    break;
                }
            }
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    sender.abort();
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let code: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    (StatusCode::from_u16(code).unwrap(), body.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads until the server closes the connection (or resets it); how long that took, and what
/// came before.
async fn until_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: Duration,
) -> (Duration, usize) {
    let started = Instant::now();
    let mut total = 0;
    let mut buf = vec![0; 256 * 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("the gateway kept the connection open for {limit:?}"));
    (started.elapsed(), total)
}

#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_is_cut_off() {
    let app = app_with(&[("TANDEM_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut silent = TcpStream::connect(addr(&app)).await.unwrap();
    let (after, bytes) = until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
    assert_eq!(bytes, 0, "no response to no request");
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn a_client_that_sends_its_headers_slowly_is_cut_off() {
    let app = app_with(&[("TANDEM_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let stream = TcpStream::connect(addr(&app)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // A byte every 100 ms: each arrives well within any per-read timeout, the head never ends.
    let dribble = tokio::spawn(async move {
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: tandem\r\nX-Slow: {}",
            "a".repeat(200)
        );
        for byte in head.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (after, bytes) = until_closed(&mut reader, Duration::from_secs(10)).await;
    dribble.abort();
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
    assert_eq!(bytes, 0, "no response to an unfinished request");
    assert_still_serves(&app).await;
}

/// `TCP_ESTABLISHED` in the kernel's socket table.
const TCP_ESTABLISHED: u8 = 1;

/// The state (`/proc/net/tcp`'s `st`) of the IPv4 socket whose local end is `local` and whose
/// peer is `peer`; `None` when there is none (closed and gone).
fn tcp_state(local: SocketAddr, peer: SocketAddr) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_else(|e| panic!("this test reads the socket table, /proc/net/tcp: {e}"));
    // `ADDR:PORT` in hex: the address as held in memory (network order), the port as a number.
    let parse = |field: &str| -> Option<SocketAddr> {
        let (ip, port) = field.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?.to_ne_bytes();
        Some(SocketAddr::from((ip, u16::from_str_radix(port, 16).ok()?)))
    };
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (from, to, state) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
        (parse(from)? == local && parse(to)? == peer)
            .then(|| u8::from_str_radix(state, 16).ok())
            .flatten()
    })
}

/// The largest send buffer the kernel may give the gateway's side of a connection.
fn max_send_buffer() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

#[tokio::test]
async fn an_event_stream_reader_that_stops_reading_is_dropped_and_others_keep_getting_events() {
    let app = app_with(&[("TANDEM_STALLED_WRITE_TIMEOUT_SECS", "1")]).await;
    let stuck_id: tandem_core::job::JobId = submit(&app, "coffee.jpg").await["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let other_id: tandem_core::job::JobId = submit(&app, "chelsea.jpg").await["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // The stuck reader: a small receive window, one request, and then no reading.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(addr(&app)).await.unwrap();
    let request = format!(
        "GET /job/{stuck_id}/events HTTP/1.1\r\nHost: tandem\r\nAccept: text/event-stream\r\n\r\n"
    );
    stuck.write_all(request.as_bytes()).await.unwrap();

    let mut other = app.events(&other_id.to_string()).await;
    let first = other.next_event(Duration::from_secs(10)).await.unwrap();
    assert_eq!(first.event, "queued");

    // The stuck job changes far more than every socket buffer on the way can hold: 256 KB
    // events, twice the kernel's largest send buffer and then some.
    let store = JobStore::new(
        jetstream(&app)
            .await
            .get_key_value(JOBS_BUCKET)
            .await
            .unwrap(),
    );
    let padding = "x".repeat(256 * 1024);
    let produced = 2 * max_send_buffer() + (4 << 20);
    for n in 0..produced / padding.len() {
        store
            .update(stuck_id, |record| {
                record.error = Some(format!("{n} {padding}"));
                true
            })
            .await
            .unwrap();
    }

    // Another stream's change arrives at once all the same.
    store
        .update(other_id, |record| record.advance(JobStatus::Running))
        .await
        .unwrap();
    let started = Instant::now();
    let next = other.next_event(Duration::from_secs(10)).await.unwrap();
    assert_eq!(next.event, "running");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The stuck connection makes no progress: after a second the gateway closes it. Seen in
    // the kernel's socket table, as reading would unstick it: the gateway's end leaves
    // ESTABLISHED. Reading then yields what the kernel had buffered, then the end, though the
    // job is not final (a live stream would go on with the latest state and keep-alives).
    let (gateway, reader) = (addr(&app), stuck.local_addr().unwrap());
    assert!(
        tcp_state(reader, gateway).is_some(),
        "the stuck reader's own end is in /proc/net/tcp"
    );
    eventually(
        Duration::from_secs(20),
        "the gateway closes the stuck connection",
        || async move {
            match tcp_state(gateway, reader) {
                Some(TCP_ESTABLISHED) => Err("its end is ESTABLISHED"),
                _ => Ok(()),
            }
        },
    )
    .await;
    let (_, received) = until_closed(&mut stuck, Duration::from_secs(20)).await;
    assert!(
        received < max_send_buffer() + (2 << 20),
        "{received} bytes reached the stuck reader of {produced} produced: the gateway buffered them"
    );
    assert_still_serves(&app).await;
}
