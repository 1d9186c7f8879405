//! The markdown tables of a run's results.

use std::fmt::Write as _;

use crate::{escalation::Escalation, fast::SLOW, report::Results, stats::CpuSplit};

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

/// CPU milliseconds per unit of work (request or job) of each process, and of the rest of
/// the machine.
fn cpu_per(cpu: &CpuSplit, units: f64) -> String {
    let per = |s: f64| if units > 0.0 { s * 1000.0 / units } else { 0.0 };
    let mut parts: Vec<String> = cpu
        .processes
        .iter()
        .filter(|(_, s)| **s > 0.0)
        .map(|(name, s)| format!("{name} {:.2}", per(*s)))
        .collect();
    parts.push(format!("others {:.2}", per(cpu.others)));
    parts.join(", ")
}

/// The tables, as markdown.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "### Targets\n\n| target | measured | |\n|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(w, "| {} | {} | {} |", t.target, t.measured, met(t.met));
    }

    if !r.paired.is_empty() {
        let _ = writeln!(
            w,
            "\n### The targets' comparisons: floor and service in alternation\n\n\
             Rounds (5; 3 of longer bursts for throughput) of a burst of the in-process model, then a burst of the service, so that both \
             see the same background load.\n\n\
             | comparison | floor side | floor p50 ms | floor per s | service side | service p50 ms | service p99 ms | service per s |\n\
             |---|---|---|---|---|---|---|---|"
        );
        for p in &r.paired {
            let _ = writeln!(
                w,
                "| {} | {} | {:.2} | {:.1} | {} | {:.2} | {:.2} | {:.1} |",
                p.what,
                p.floor_side,
                p.floor.p50_ms,
                p.floor_per_sec,
                p.service_side,
                p.service.p50_ms,
                p.service.p99_ms,
                p.service_per_sec
            );
        }
    }

    if let Some(floor) = &r.floor {
        let _ = writeln!(
            w,
            "\n### a. Floor: ONNX Runtime in the benchmark's process, no service running\n\n\
             | model | instances x intra-op threads | batch | p50 ms | p99 ms | images/s |\n|---|---|---|---|---|---|"
        );
        for f in &floor.inference {
            let conf = if f.configured { " (config.toml)" } else { "" };
            let _ = writeln!(
                w,
                "| {} | {} x {}{conf} | {} | {:.2} | {:.2} | {:.1} |",
                f.model,
                f.instances,
                f.threads,
                f.batch,
                f.latency.p50_ms,
                f.latency.p99_ms,
                f.images_per_sec
            );
        }
        let _ = writeln!(
            w,
            "\nDecode + crop + resize + scale of one image, one thread:\n\n\
             | image | for | p50 ms | p99 ms |\n|---|---|---|---|"
        );
        for p in &floor.preprocess {
            let _ = writeln!(
                w,
                "| {} | {} | {:.2} | {:.2} |",
                p.image, p.model, p.latency.p50_ms, p.latency.p99_ms
            );
        }
    }

    if !r.predict.is_empty() {
        let _ = writeln!(
            w,
            "\n### b. `POST /predict`, keep-alive, slow path idle (no worker)\n\n\
             | image | setting | concurrency | p50 ms | p90 ms | p99 ms | req/s | errors | in gateway ms | model call ms | ORT ms/batch | images/batch |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for p in &r.predict {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                p.image,
                p.variant,
                p.concurrency,
                p.latency.p50_ms,
                p.latency.p90_ms,
                p.latency.p99_ms,
                p.requests_per_sec,
                p.errors,
                p.gateway_ms_mean,
                p.model_call_ms_mean,
                p.ort_batch_ms_mean,
                p.batch_size_mean
            );
        }
        if let Some(h) = &r.http_floor {
            let _ = writeln!(
                w,
                "\nHTTP alone (`GET /healthz`, concurrency 1, same client): p50 {:.3} ms, p99 {:.3} ms.",
                h.p50_ms, h.p99_ms
            );
        }
        let _ = writeln!(
            w,
            "\nCPU per request, milliseconds (user + system, from /proc; `others`: processes outside the benchmark):\n\n\
             | image | setting | concurrency | CPU ms per request |\n|---|---|---|---|"
        );
        for p in &r.predict {
            let units = p.requests_per_sec * p.cpu.wall_secs;
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} |",
                p.image,
                p.variant,
                p.concurrency,
                cpu_per(&p.cpu, units)
            );
        }
        crate::breakdown::fast(w, r);
    }

    if !r.slow_answer.is_empty() {
        let _ = writeln!(
            w,
            "\n### c. Submit -> SSE `succeeded` (chelsea, {SLOW})\n\n\
             | load | clients | worker concurrency | p50 ms | p99 ms | after the reply p50 ms | jobs/s | errors |\n\
             |---|---|---|---|---|---|---|---|"
        );
        for j in &r.slow_answer {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
                j.load,
                j.clients,
                j.worker_concurrency,
                j.latency.p50_ms,
                j.latency.p99_ms,
                j.after_reply.p50_ms,
                j.jobs_per_sec,
                j.errors
            );
        }
        crate::breakdown::slow(w, r);
    }

    if !r.isolation.is_empty() {
        let _ = writeln!(
            w,
            "\n### d. `/predict` (chelsea) with the slow queue saturated, against idle\n\n\
             | how the cores are shared | clients | idle req/s | idle p99 ms | saturated req/s | saturated p99 ms | throughput ratio | p99 ratio | >= 0.9x and <= 2x | slow jobs/s meanwhile |\n\
             |---|---|---|---|---|---|---|---|---|---|"
        );
        for i in &r.isolation {
            let _ = writeln!(
                w,
                "| {} | {} | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {:.1} |",
                i.variant,
                i.concurrency,
                i.idle.requests_per_sec,
                i.idle.latency.p99_ms,
                i.busy.requests_per_sec,
                i.busy.latency.p99_ms,
                i.throughput_ratio(),
                i.p99_ratio(),
                met(Some(i.met())),
                i.slow_jobs_per_sec
            );
        }
    }

    if let Some(p) = &r.pipeline {
        let _ = writeln!(
            w,
            "\n### e. Pipeline ceiling: the null model on both paths (32 x 32 PNG)\n\n\
             | what | clients | workers x concurrency | per second | p50 ms | p99 ms | errors | CPU ms per job |\n\
             |---|---|---|---|---|---|---|---|"
        );
        let units = p.jobs_per_sec * p.cpu.wall_secs;
        let _ = writeln!(
            w,
            "| submit -> SSE `succeeded` | {} | {} x {} | {:.0} jobs | {:.2} | {:.2} | {} | {} |",
            p.clients,
            p.workers,
            p.worker_concurrency,
            p.jobs_per_sec,
            p.latency.p50_ms,
            p.latency.p99_ms,
            p.errors,
            cpu_per(&p.cpu, units)
        );
        if let Some(s) = &r.submit_only {
            let units = s.per_sec * s.cpu.wall_secs;
            let _ = writeln!(
                w,
                "| `POST /predict` alone, no worker | {} | - | {:.0} requests | {:.2} | {:.2} | {} | {} |",
                s.clients,
                s.per_sec,
                s.latency.p50_ms,
                s.latency.p99_ms,
                s.errors,
                cpu_per(&s.cpu, units)
            );
        }
        let ours: f64 = p.cpu.processes.values().sum();
        if units > 0.0 && ours > 0.0 {
            let per_job = ours * 1000.0 / units;
            let cores = r.machine.cores as f64;
            let _ = writeln!(
                w,
                "\nThe benchmark's own processes (load generator included) used {per_job:.2} CPU ms per job: \
                 {cores:.0} cores can carry at most {:.0} jobs/s of that, with nothing else running.",
                cores * 1000.0 / per_job
            );
        }
        crate::traffic::cost_table(w, p, r.submit_only.as_ref());
    }

    if let Some(f) = &r.fanout {
        let _ = writeln!(
            w,
            "\n### f. SSE fan-out: one job, {} streams\n\n\
             | streams open | opening took s | gateway RSS idle MiB | with the streams MiB | KiB per stream | peak MiB | delivery p50 ms | p99 ms | last ms | first to last ms | missed |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n\
             | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            f.clients,
            f.connected,
            f.connect_secs,
            f.rss_idle_mib,
            f.rss_connected_mib,
            (f.rss_connected_mib - f.rss_idle_mib) * 1024.0 / (f.connected.max(1) as f64),
            f.rss_peak_mib,
            f.delivery.p50_ms,
            f.delivery.p99_ms,
            f.delivery.max_ms,
            f.spread_ms,
            f.missed
        );
    }
    if let Some(g) = &r.escalation {
        escalation(w, g);
    }
    if let Some(s) = &r.soak {
        crate::soak::table(w, s);
    }
    md
}

/// Row g's table: the two policies side by side, then `auto` against `always`.
fn escalation(w: &mut String, g: &Escalation) {
    let c = &g.calibration;
    let _ = writeln!(
        w,
        "\n### g. Escalation: `escalate=always` against `auto` on calibrated thresholds\n\n\
         Workload: {} images (4 test photos and their variants, JPEG), {} clients, {} rounds of {:.1} s \
         per policy in alternating order, each round's jobs then finished by one slow-worker. \
         `tandem calibrate --target {}` on the same images ({:.1} s): global threshold {}, {} \
         per-class thresholds; it predicted: {}. `TANDEM_ESCALATE_AUDIT_RATE` {}. \
         Curve: `{}`.\n\n\
         | policy | jobs | req/s | p50 ms | p99 ms | errors | escalated | slow inferences | per job | per s submitting | audited (agree) | audits dropped | slow path busy after s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|",
        c.images,
        g.clients,
        g.rounds,
        g.secs,
        c.target,
        c.secs,
        c.global_threshold,
        c.per_class.len(),
        c.summary.trim_start_matches("global threshold "),
        g.audit_rate,
        c.curve
    );
    for s in [&g.always, &g.auto] {
        let _ = writeln!(
            w,
            "| {} | {} | {:.1} | {:.2} | {:.2} | {} | {} | {:.0} | {:.3} | {:.1} | {:.0} ({:.0}) | {:.0} | {:.1} |",
            s.policy,
            s.submitted,
            s.per_sec,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.errors,
            s.escalated,
            s.slow_inferences,
            s.slow_per_job(),
            s.slow_per_sec(),
            s.audits_agreed + s.audits_disagreed,
            s.audits_agreed,
            s.audits_dropped,
            s.drain_secs
        );
    }
    let (a, b) = (&g.always, &g.auto);
    let agreement = b
        .audit_agreement()
        .map_or_else(|| "no audit".into(), |x| format!("{:.1} %", x * 100.0));
    let _ = writeln!(
        w,
        "\n`auto` against `always`: p50 {:.2} x, p99 {:.2} x, throughput {:.2} x; slow-model \
         inferences per job {:.0} % fewer; the audited skipped jobs agree {agreement}. CPU used by \
         processes outside the benchmark while submitting: {:.1} % (always), {:.1} % (auto) of the machine.",
        b.latency.p50_ms / a.latency.p50_ms,
        b.latency.p99_ms / a.latency.p99_ms,
        b.per_sec / a.per_sec,
        g.saved_share() * 100.0,
        a.others_share() * 100.0,
        b.others_share() * 100.0
    );
}
