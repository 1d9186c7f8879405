//! Row g's workload and its calibration: the test photos and their variants (the shared
//! generator, `tandem_test_images::variants`), and `tandem calibrate` (the release binary)
//! run on them against the bench's model server, which writes the thresholds file and the
//! curve.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use image::ImageFormat;
use serde::{Deserialize, Serialize};

use crate::{
    fast::{FAST, SLOW},
    inputs::Photo,
    procs::{Env, ModelServer},
    stats::round3,
};

/// The photos of `tests/data` whose variants make the workload (the calibration test's).
const PHOTOS: [&str; 4] = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg"];
/// The agreement the thresholds are calibrated for (`tandem calibrate --target`).
pub const TARGET: f64 = 0.99;
/// Where in the output folder the calibration writes.
pub const CURVE_FILE: &str = "escalation-curve.png";
pub const THRESHOLDS_FILE: &str = "escalation-thresholds.json";
/// Longest `tandem calibrate` may take (two models over a few dozen images).
const LIMIT: Duration = Duration::from_secs(300);

/// What `tandem calibrate` chose, and what it expects of the choice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibration {
    /// Images classified (the whole workload).
    pub images: usize,
    pub target: f64,
    /// The thresholds file's global threshold, and its per-class ones.
    pub global_threshold: f64,
    pub per_class: BTreeMap<String, f64>,
    /// Its line on the global threshold: escalated share, skipped jobs' agreement, saved.
    pub summary: String,
    /// Everything it printed (the table of thresholds).
    pub report: String,
    /// The curve and the thresholds file, relative to the repository root.
    pub curve: String,
    pub thresholds_file: String,
    pub secs: f64,
}

/// The workload: every variant of each photo, as JPEG (`chelsea-mirrored`, ...).
pub fn workload(root: &Path) -> anyhow::Result<Vec<Photo>> {
    let mut photos = Vec::new();
    for file in PHOTOS {
        let path = root.join("tests/data").join(file);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let stem = file.trim_end_matches(".jpg");
        for (name, jpeg) in tandem_test_images::variants(&bytes, ImageFormat::Jpeg)? {
            let (width, height) = image::load_from_memory(&jpeg)?.to_rgb8().dimensions();
            photos.push(Photo {
                name: format!("{stem}-{name}"),
                width,
                height,
                bytes: jpeg.into(),
                content_type: "image/jpeg",
            });
        }
    }
    Ok(photos)
}

/// Writes the workload into a folder and runs `tandem calibrate` on it against
/// `model_server`; the thresholds file and the curve go to `out_dir`.
pub async fn calibrate(
    env: &Env,
    model_server: &ModelServer,
    workload: &[Photo],
    out_dir: &Path,
) -> anyhow::Result<Calibration> {
    let dir = tempfile::Builder::new()
        .prefix("tandem-bench-calibration-")
        .tempdir()?;
    for photo in workload {
        std::fs::write(dir.path().join(format!("{}.jpg", photo.name)), &photo.bytes)?;
    }
    std::fs::create_dir_all(out_dir)?;
    let (curve, thresholds_file) = (out_dir.join(CURVE_FILE), out_dir.join(THRESHOLDS_FILE));
    let started = Instant::now();
    let report = run_tandem(env, model_server, dir.path(), &curve, &thresholds_file).await?;
    let secs = round3(started.elapsed().as_secs_f64());
    let (global_threshold, per_class) = read_thresholds(&thresholds_file)?;
    let summary = report
        .lines()
        .find(|l| l.starts_with("global threshold"))
        .unwrap_or_default()
        .to_owned();
    let relative = |p: &PathBuf| p.strip_prefix(&env.root).unwrap_or(p).display().to_string();
    Ok(Calibration {
        images: workload.len(),
        target: TARGET,
        global_threshold,
        per_class,
        summary,
        curve: relative(&curve),
        thresholds_file: relative(&thresholds_file),
        secs,
        report,
    })
}

/// `tandem calibrate DIR --target 0.99 --output FILE --plot PNG`; its standard output.
async fn run_tandem(
    env: &Env,
    model_server: &ModelServer,
    dir: &Path,
    curve: &Path,
    thresholds: &Path,
) -> anyhow::Result<String> {
    let binary = env.bin_dir.join("tandem");
    anyhow::ensure!(
        binary.is_file(),
        "no tandem in {}: build it (cargo build --release --workspace --bins)",
        env.bin_dir.display()
    );
    let mut command = tokio::process::Command::new(&binary);
    command
        .arg("calibrate")
        .arg(dir)
        .args(["--model-server", &model_server.url, "--fast-model", FAST])
        .args(["--slow-model", SLOW, "--target", &TARGET.to_string()])
        .arg("--output")
        .arg(thresholds)
        .arg("--plot")
        .arg(curve)
        .current_dir(&env.root)
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TANDEM_") {
            command.env_remove(key);
        }
    }
    let output = tokio::time::timeout(LIMIT, command.output())
        .await
        .with_context(|| format!("tandem calibrate still running after {LIMIT:?}"))??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "tandem calibrate exited {}:\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// The global and per-class thresholds of a thresholds file.
fn read_thresholds(path: &Path) -> anyhow::Result<(f64, BTreeMap<String, f64>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)?;
    let global = value["global"]
        .as_f64()
        .with_context(|| format!("no global threshold in {}", path.display()))?;
    let per_class = value["per_class"]
        .as_object()
        .map(|classes| {
            classes
                .iter()
                .filter_map(|(label, t)| Some((label.clone(), t.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok((global, per_class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_every_variant_of_each_photo_as_jpeg() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let photos = workload(&root).unwrap();
        assert_eq!(
            photos.len(),
            PHOTOS.len() * tandem_test_images::VARIANT_NAMES.len()
        );
        assert_eq!(photos[1].name, "chelsea-mirrored");
        for photo in &photos {
            assert_eq!(
                image::guess_format(&photo.bytes).unwrap(),
                ImageFormat::Jpeg
            );
        }
    }

    #[test]
    fn thresholds_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, r#"{"global": 0.5, "per_class": {"cat": 0.25}}"#).unwrap();
        let (global, per_class) = read_thresholds(&path).unwrap();
        assert_eq!((global, per_class["cat"]), (0.5, 0.25));
        std::fs::write(&path, r#"{"per_class": {}}"#).unwrap();
        assert!(read_thresholds(&path).is_err());
    }
}
