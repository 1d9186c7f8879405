//! Writing a run's results: results.json, table.md, the chart, and BENCHMARKS.md from its
//! template.

use std::path::Path;

use crate::{Settings, chart, report::Results, stats, tables};

pub fn git_commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if !changes.is_empty() => format!("{commit} with uncommitted changes"),
        _ => commit,
    }
}

/// Share of the machine's CPU time that processes outside the benchmark used while it measured.
pub fn others_share(r: &Results) -> f64 {
    let mut splits: Vec<&stats::CpuSplit> = r.predict.iter().map(|p| &p.cpu).collect();
    splits.extend(r.slow_answer.iter().map(|j| &j.cpu));
    splits.extend(r.isolation.iter().flat_map(|i| [&i.idle.cpu, &i.busy.cpu]));
    splits.extend(r.pipeline.iter().map(|p| &p.cpu));
    splits.extend(r.submit_only.iter().map(|s| &s.cpu));
    if let Some(g) = &r.escalation {
        splits.extend(g.always.cpu.iter().chain(&g.auto.cpu));
    }
    splits.extend(r.soak.iter().map(|s| &s.cpu));
    let others: f64 = splits.iter().map(|s| s.others).sum();
    let capacity: f64 = splits.iter().map(|s| s.capacity).sum();
    if capacity > 0.0 {
        stats::round3(others / capacity)
    } else {
        0.0
    }
}

/// Draws row s's chart when the run has a soak; whether it did.
fn soak_chart(results: &Results, path: &Path) -> bool {
    let Some(soak) = &results.soak else {
        return false;
    };
    match chart::draw_soak(soak, path) {
        Ok(()) => true,
        Err(e) => {
            println!("no soak chart: {e:#}");
            false
        }
    }
}

pub fn write_outputs(settings: &Settings, root: &Path, results: &Results) -> anyhow::Result<()> {
    let out = root.join(&settings.out_dir);
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    let tables = tables::markdown(results);
    std::fs::write(out.join("table.md"), &tables)?;
    let chart_path = out.join("predict-latency.png");
    let chart = match chart::draw(results, &chart_path) {
        Ok(()) => true,
        Err(e) => {
            println!("no chart: {e:#}");
            false
        }
    };
    let soak_path = out.join("soak.png");
    let soak_chart = soak_chart(results, &soak_path);
    println!(
        "\n{tables}\nwrote {}/results.json, table.md{}{}",
        out.display(),
        if chart { ", predict-latency.png" } else { "" },
        if soak_chart { ", soak.png" } else { "" }
    );
    if let Some(md) = &settings.benchmarks_md {
        let template = std::fs::read_to_string(root.join("bench/BENCHMARKS.template.md"))?;
        let m = &results.machine;
        let machine = format!(
            "- {} cores (`nproc`), {}, {:.1} GiB memory, Linux {}\n\
             - load average (1, 5, 15 min) before the run {:?}, after it {:?}\n\
             - CPU time used by processes outside the benchmark while it measured: {:.1} % of the machine\n\
             - commit {}, run started {}, took {:.0} s",
            m.cores,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            m.load_before,
            m.load_after,
            m.others_cpu_share * 100.0,
            results.git_commit,
            results.started_at,
            results.total_secs
        );
        let chart_rel = chart_path.strip_prefix(root).unwrap_or(&chart_path);
        let soak_rel = soak_path.strip_prefix(root).unwrap_or(&soak_path);
        let text = template
            .replace("{{machine}}", &machine)
            .replace("{{tables}}", tables.trim_end())
            .replace("{{chart}}", &chart_rel.display().to_string())
            .replace("{{soak_chart}}", &soak_rel.display().to_string());
        std::fs::write(root.join(md), text)?;
        println!("wrote {}", md.display());
    }
    Ok(())
}
