//! Row e's cost of one job, component by component: each service's NATS traffic, read from
//! nats-server's own monitoring (`/connz`, `/jsz`) and the services' conflict counters around a
//! measurement, and the table that puts it beside each process's CPU with what the work buys.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

use crate::{
    client,
    slow::{JobsRun, SubmitOnly},
};

/// What the services exchanged with nats-server during one measurement, from the server's own
/// monitoring (`/connz`, `/jsz`): counted the same way whatever the services' build.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NatsTraffic {
    /// By connection name (`tandem-gateway`, `tandem-slow-worker`).
    pub clients: BTreeMap<String, Flow>,
    /// Messages stored, by stream (`KV_tandem_jobs`: record versions; `TANDEM_JOBS`: jobs).
    pub stored: BTreeMap<String, u64>,
    /// Compare-and-set writes refused because another writer was first (then re-read and
    /// applied again), by service: `tandem_job_store_conflicts_total`.
    pub conflicts: BTreeMap<String, f64>,
}

/// One connection's messages and bytes, each way.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Flow {
    /// Client to server: publishes (stream and KV writes, acknowledgements) and requests.
    pub sent_msgs: u64,
    /// Server to client: deliveries, replies, publish acknowledgements.
    pub received_msgs: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

impl Flow {
    fn minus(self, before: Self) -> Self {
        Self {
            sent_msgs: self.sent_msgs.saturating_sub(before.sent_msgs),
            received_msgs: self.received_msgs.saturating_sub(before.received_msgs),
            sent_bytes: self.sent_bytes.saturating_sub(before.sent_bytes),
            received_bytes: self.received_bytes.saturating_sub(before.received_bytes),
        }
    }
}

/// Counters read before a measurement; [`TrafficMeter::stop`] gives what changed.
#[derive(Debug)]
pub struct TrafficMeter {
    monitor: String,
    /// (service, base URL of its `/metrics`).
    services: Vec<(&'static str, String)>,
    before: NatsTraffic,
}

impl TrafficMeter {
    pub async fn start(monitor: &str, services: Vec<(&'static str, String)>) -> Self {
        let before = NatsTraffic::read(monitor, &services).await;
        Self {
            monitor: monitor.to_owned(),
            services,
            before,
        }
    }

    pub async fn stop(self) -> NatsTraffic {
        let after = NatsTraffic::read(&self.monitor, &self.services).await;
        let before = &self.before;
        NatsTraffic {
            clients: after
                .clients
                .iter()
                .map(|(name, flow)| {
                    let was = before.clients.get(name).copied().unwrap_or_default();
                    (name.clone(), flow.minus(was))
                })
                .collect(),
            stored: after
                .stored
                .iter()
                .map(|(name, n)| {
                    (
                        name.clone(),
                        n.saturating_sub(*before.stored.get(name).unwrap_or(&0)),
                    )
                })
                .collect(),
            conflicts: after
                .conflicts
                .iter()
                .map(|(name, n)| (name.clone(), n - before.conflicts.get(name).unwrap_or(&0.0)))
                .collect(),
        }
    }
}

impl NatsTraffic {
    /// The counters now (empty where the monitoring does not answer).
    async fn read(monitor: &str, services: &[(&'static str, String)]) -> Self {
        let json = |path: String| async move {
            let (_, body) = client::get_url(&path).await.ok()?;
            serde_json::from_slice::<serde_json::Value>(&body).ok()
        };
        let mut traffic = Self::default();
        let connz = json(format!("{monitor}/connz?limit=4096")).await;
        for c in connz
            .iter()
            .flat_map(|c| c["connections"].as_array())
            .flatten()
        {
            let name = c["name"].as_str().unwrap_or("unnamed").to_owned();
            let flow = traffic.clients.entry(name).or_default();
            let n = |field: &str| c[field].as_u64().unwrap_or(0);
            // The server's "in" is what the client sent.
            flow.sent_msgs += n("in_msgs");
            flow.received_msgs += n("out_msgs");
            flow.sent_bytes += n("in_bytes");
            flow.received_bytes += n("out_bytes");
        }
        let jsz = json(format!("{monitor}/jsz?streams=true")).await;
        let accounts = jsz.iter().flat_map(|j| j["account_details"].as_array());
        for account in accounts.flatten() {
            for s in account["stream_detail"].as_array().into_iter().flatten() {
                let name = s["name"].as_str().unwrap_or_default().to_owned();
                traffic
                    .stored
                    .insert(name, s["state"]["last_seq"].as_u64().unwrap_or(0));
            }
        }
        for (service, url) in services {
            let conflicts = crate::procs::scrape(url, "tandem_job_store_conflicts_total", "")
                .await
                .unwrap_or(0.0);
            traffic.conflicts.insert((*service).to_owned(), conflicts);
        }
        traffic
    }
}

/// Per job: a count over the jobs of a run.
fn per(n: f64, jobs: u64) -> f64 {
    if jobs == 0 { 0.0 } else { n / jobs as f64 }
}

/// `sent / received` messages and KB per job of one connection name, or `-`.
fn flow_cells(traffic: &NatsTraffic, name: &str, jobs: u64) -> (String, String) {
    let Some(f) = traffic.clients.get(name) else {
        return ("-".into(), "-".into());
    };
    let kb = |b: u64| per(b as f64, jobs) / 1024.0;
    (
        format!(
            "{:.1} / {:.1}",
            per(f.sent_msgs as f64, jobs),
            per(f.received_msgs as f64, jobs)
        ),
        format!("{:.2} / {:.2}", kb(f.sent_bytes), kb(f.received_bytes)),
    )
}

/// What each component does for one job, and what that work buys (the code's design, stated
/// once here beside what it measured).
const WORK: [(&str, &str, &str); 5] = [
    (
        "bench",
        "`POST /predict`, then `GET /job/<id>/events` read to `succeeded` (the clients' side)",
        "the measurement",
    ),
    (
        "gateway",
        "HTTP: the POST and the event stream; the fast model over gRPC; the record's create and \
         the job's publish, sent together and their acknowledgements awaited together; the fast \
         answer's compare-and-set; the event stream's first read; the bucket watcher's delivery \
         of every version of the record",
        "a reply only once the job is stored and its record holds the fast answer (a client never \
         holds the id of a job that is not there); events from whichever gateway the client \
         reaches, with one watcher for all streams",
    ),
    (
        "slow-worker",
        "pull requests for its free slots (one serves a batch); one read and a \
         compare-and-set marking `running`; the slow model over gRPC; the result's \
         compare-and-set from the revision it wrote; the acknowledgement, not awaited",
        "a cancelled, expired or already final job is not run; attempts and `started_at` \
         recorded; the result stored before the ack (a crash between them redelivers a job \
         that is then skipped)",
    ),
    (
        "model-server",
        "two gRPC calls (fast, slow): decoding the 32 x 32 PNG, the batching thread, the null \
         model",
        "the models behind one Open Inference Protocol endpoint",
    ),
    (
        "nats-server",
        "each stored message (record versions, the job) written to the file store (here on \
         /dev/shm; JetStream syncs to disk every 2 minutes by default, not per write), \
         delivered to the watcher and the worker, the job removed on its ack",
        "every accepted job and its record outlive the death of any other process",
    ),
];

/// Row e's cost of one job, component by component, and the `POST /predict`-alone variant.
pub fn cost_table(w: &mut String, run: &JobsRun, submit: Option<&SubmitOnly>) {
    let Some(traffic) = &run.traffic else {
        return;
    };
    let units = run.jobs_per_sec * run.cpu.wall_secs;
    let cpu = |name: &str| {
        run.cpu
            .processes
            .get(name)
            .filter(|_| units > 0.0)
            .map_or_else(|| "-".into(), |s| format!("{:.2}", s * 1000.0 / units))
    };
    let conflicts = |service: &str| {
        per(
            traffic.conflicts.get(service).copied().unwrap_or(0.0),
            run.jobs,
        )
    };
    let stored = |stream: &str| {
        per(
            traffic.stored.get(stream).copied().unwrap_or(0) as f64,
            run.jobs,
        )
    };
    let _ = writeln!(
        w,
        "\nWhat one job costs, component by component ({} jobs; CPU as above; NATS messages and \
         bytes from nats-server's `/connz`, stored messages from its `/jsz`):\n\n\
         | component | CPU ms per job | NATS messages per job, sent / received | KB per job, sent / received | what it does for each job | what that buys |\n\
         |---|---|---|---|---|---|",
        run.jobs
    );
    for (name, work, buys) in WORK {
        let (msgs, kb) = match name {
            "gateway" => flow_cells(traffic, "tandem-gateway", run.jobs),
            "slow-worker" => flow_cells(traffic, "tandem-slow-worker", run.jobs),
            "nats-server" => (
                format!(
                    "stores {:.2} record versions and {:.2} jobs",
                    stored("KV_tandem_jobs"),
                    stored("TANDEM_JOBS")
                ),
                "-".into(),
            ),
            _ => ("-".into(), "-".into()),
        };
        let note = match name {
            "gateway" | "slow-worker" => format!(
                " ({:.2} compare-and-set conflicts per job, each a read and a retry)",
                conflicts(name)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            w,
            "| {name} | {} | {msgs} | {kb} | {work}{note} | {buys} |",
            cpu(name)
        );
    }
    if let Some(s) = submit.filter(|s| s.requests > 0)
        && let Some(t) = &s.traffic
    {
        let units = s.per_sec * s.cpu.wall_secs;
        let gateway = s.cpu.processes.get("gateway").copied().unwrap_or(0.0);
        let (msgs, kb) = flow_cells(t, "tandem-gateway", s.requests);
        let _ = writeln!(
            w,
            "| gateway, `POST /predict` alone (no worker, no event stream) | {:.2} | {msgs} | {kb} | \
             the POST, the fast model, the create and the publish, the fast answer's \
             compare-and-set; the watcher sees the record's two versions | the gateway's half: \
             the rest of its row is the event stream and the worker's versions |",
            if units > 0.0 {
                gateway * 1000.0 / units
            } else {
                0.0
            }
        );
    }
}
