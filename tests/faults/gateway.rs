//! Case (d): the gateway restarts while SSE clients follow jobs. Each client, cut off, waits a
//! moment (as a browser's `EventSource` does), reconnects with `Last-Event-ID` and must get the
//! rest: the final state, with nothing it had already seen sent again.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{
    LABEL, PHOTO, RATE, SERIAL,
    load::Load,
    stop_and_tally,
    support::{
        app::{AppOptions, spawn_app_with},
        gateway::Gateway,
        photo,
        sse::{SseEvent, SseStream},
    },
};

/// SSE clients connected across the restart.
const CLIENTS: usize = 10;
/// A client's pause before reconnecting (browsers wait about 3 s; shorter keeps the case quick).
const RECONNECT_DELAY: Duration = Duration::from_millis(1500);

/// What one client saw.
#[derive(Debug)]
struct Followed {
    id: String,
    /// `(event id, event name, data)` in order of arrival.
    events: Vec<(u64, String, Value)>,
    reconnects: u32,
}

/// Follows `stream` (whose first event, `first`, was read) to a final state.
async fn follow(gateway: Gateway, id: String, mut stream: SseStream, first: SseEvent) -> Followed {
    let url = gateway.url(&format!("/job/{id}/events"));
    let mut followed = Followed {
        id,
        events: Vec::new(),
        reconnects: 0,
    };
    let mut next = Some(first);
    loop {
        let event = match next.take() {
            Some(first) => Some(first),
            None => stream.next_event(Duration::from_secs(60)).await,
        };
        match event {
            Some(event) => {
                let revision: u64 = event
                    .id
                    .as_deref()
                    .and_then(|id| id.parse().ok())
                    .expect("every event has a numeric id");
                let terminal = matches!(event.event.as_str(), "succeeded" | "failed" | "cancelled");
                followed
                    .events
                    .push((revision, event.event.clone(), event.json()));
                if terminal {
                    return followed;
                }
            }
            None => {
                followed.reconnects += 1;
                assert!(followed.reconnects <= 5, "{followed:?}");
                tokio::time::sleep(RECONNECT_DELAY).await;
                gateway.wait_ready_for(Duration::from_secs(60)).await;
                let last = followed.events.last().map(|(id, _, _)| id.to_string());
                stream = SseStream::open(&gateway.http, &url, last.as_deref()).await;
                assert_eq!(stream.status, 200, "{followed:?}");
            }
        }
    }
}

/// Whether `next` may follow `previous` on one job's stream: a newer version of the record, or,
/// for a job still queued, the same version with its place in the queue updated (`queue`, the
/// only field that may differ). Anything else is an event the client had seen, sent again.
fn in_order(previous: &(u64, String, Value), next: &(u64, String, Value)) -> bool {
    let without_queue = |data: &Value| {
        let mut data = data.clone();
        if let Some(fields) = data.as_object_mut() {
            fields.remove("queue");
        }
        data
    };
    previous.0 < next.0
        || (previous.0 == next.0
            && previous.1 == "queued"
            && next.1 == "queued"
            && previous.2 != next.2
            && without_queue(&previous.2) == without_queue(&next.2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_gateway_restarted_with_sse_clients_connected() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    // No worker yet: the followed jobs wait in the queue until the gateway is going down.
    let mut app = spawn_app_with(AppOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let load = Load::start("d", &app.base, photo(PHOTO), RATE);
    let ids = load.wait_accepted(CLIENTS, Duration::from_secs(30)).await;
    let mut followers = Vec::new();
    for id in ids.into_iter().take(CLIENTS) {
        let mut stream = app.events(&id).await;
        assert_eq!(stream.status, 200);
        // Connected and up to date before the restart.
        let first = stream.next_event(Duration::from_secs(10)).await.unwrap();
        assert_eq!(first.event, "queued");
        let gateway = Gateway::new(&app.base, reqwest::Client::new());
        followers.push(tokio::spawn(follow(gateway, id, stream, first)));
    }

    app.restart_gateway().await;
    // The followed jobs run while the clients are cut off.
    app.add_worker();
    app.wait_ready().await;
    let tally = stop_and_tally(
        "(d) gateway restarted",
        started,
        &app,
        load,
        &app.nats.url(),
    )
    .await;
    let mut problems = Vec::new();
    let mut reconnected = 0;
    for follower in followers {
        let followed = follower.await.expect("an SSE client panicked");
        reconnected += usize::from(followed.reconnects > 0);
        let revisions: Vec<u64> = followed.events.iter().map(|(r, _, _)| *r).collect();
        let (_, last, data) = followed.events.last().unwrap();
        let (_, stored) = app.job(&followed.id).await;
        if followed.reconnects == 0 {
            problems.push(format!("{}: never cut off: {revisions:?}", followed.id));
        }
        if !followed.events.windows(2).all(|w| in_order(&w[0], &w[1])) {
            problems.push(format!(
                "{}: an event came twice: {revisions:?}",
                followed.id
            ));
        }
        if last != "succeeded" || data["slow"]["label"] != LABEL || data["slow"] != stored["slow"] {
            problems.push(format!("{}: missed the result: {followed:?}", followed.id));
        }
    }
    tally.report_and_check(&format!(
        "{CLIENTS} SSE clients, {reconnected} reconnected with Last-Event-ID, {} missed an event",
        problems.len()
    ));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
