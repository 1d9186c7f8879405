//! Row b's other settings: the same `/predict` points on a model server whose `models/` has a
//! setting changed, to show what the shipped value buys.

use std::path::Path;

use crate::{
    Settings,
    fast::{self, FAST},
    inputs,
    procs::{self, ModelServer},
};

/// Row b's other settings: the fast model's batching wait at high concurrency, and ONNX
/// Runtime's intra-op threads spinning always (its default) or never, instead of during runs
/// only, at concurrency 1 and at the throughput point.
pub async fn row_b(
    settings: &Settings,
    env: &procs::Env,
    models: &Path,
    chelsea: &inputs::Photo,
) -> anyhow::Result<Vec<fast::PredictPoint>> {
    let high: Vec<usize> = settings
        .concurrency
        .iter()
        .copied()
        .filter(|c| *c >= 16)
        .collect();
    let mut points = variant_curve(
        settings,
        env,
        models,
        chelsea,
        &[(FAST, "max_queue_delay_us", "2000")],
        &high,
        "fast model max_queue_delay_us = 2000",
    )
    .await?;
    let mut spinning = vec![1, settings.throughput_concurrency];
    spinning.dedup();
    for how in ["always", "never"] {
        points.extend(
            variant_curve(
                settings,
                env,
                models,
                chelsea,
                &[(FAST, "intra_op_spinning", &format!("\"{how}\""))],
                &spinning,
                &format!("fast model intra_op_spinning = \"{how}\""),
            )
            .await?,
        );
    }
    Ok(points)
}

/// `/predict` with chelsea on a model server whose `models/` has `overrides`.
async fn variant_curve(
    settings: &Settings,
    env: &procs::Env,
    models: &Path,
    chelsea: &inputs::Photo,
    overrides: &[(&str, &str, &str)],
    concurrencies: &[usize],
    label: &str,
) -> anyhow::Result<Vec<fast::PredictPoint>> {
    let repo = inputs::variant_repository(models, &[FAST], overrides)?;
    let server = ModelServer::start(env, repo.path(), None).await?;
    let points = fast::predict_curve(
        settings,
        env,
        &server,
        &[(chelsea, settings.secs)],
        concurrencies,
        label,
    )
    .await;
    server.proc.stop().await;
    points
}
