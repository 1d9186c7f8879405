//! The model repository: one sub-folder per model with its ONNX file, labels and `config.toml`.
//!
//! Reading the repository is cheap (per model: TOML, a labels file, and hashing the ONNX file
//! for its digest) and happens before the server binds, so a broken deployment fails at start
//! with every problem of a file listed, each naming the file and the field. Creating ONNX
//! Runtime sessions is the slow part and happens later, in the background (see `runner`).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use serde::Deserialize;

#[cfg(test)]
use crate::preprocess::{Crop, Scaling}; // for the tests' `use super::*`
use crate::{
    digest,
    preprocess::{Layout, Preprocess},
};
use config_file::RawConfig;

mod config_file;

/// The name of the per-model configuration file.
pub const CONFIG_FILE: &str = "config.toml";

/// What the model's output tensor holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Unnormalised scores: classification applies softmax.
    #[default]
    Logits,
    /// Already probabilities: classification reports them as they are.
    Probabilities,
}

/// When the session's idle intra-op threads spin waiting for work instead of sleeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spinning {
    /// While a batch runs (operators hand work over fast), not between batches, when the
    /// cores belong to decoding, the gateway and NATS (`session.force_spinning_stop`).
    #[default]
    Run,
    /// Always: ONNX Runtime's own default; spinning threads keep a core busy after each run.
    Always,
    /// Never: every parallel operator waits for its threads to wake up.
    Never,
}

/// What runs the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// An ONNX Runtime session on `onnx_file`.
    #[default]
    Onnx,
    /// No model at all: every image gets the same scores (all logits 0), without ONNX Runtime.
    /// For measuring what the plumbing around a model costs (`bench/`); needs no ONNX file.
    Null,
}

/// One model, fully validated except for what only the ONNX session can tell.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The name clients use (`config.toml` `name`, default: the folder name).
    pub name: String,
    /// ONNX Runtime, or the null model.
    pub backend: Backend,
    /// The `config.toml` this came from (for error messages).
    pub config_path: PathBuf,
    /// The ONNX file.
    pub onnx_path: PathBuf,
    /// The labels file.
    pub labels_path: PathBuf,
    /// Display labels, one per class (the text before the first ", " of each line).
    pub labels: Vec<String>,
    /// Name of the model's FP32 image input tensor.
    pub input_tensor: String,
    /// Name of the model's output tensor.
    pub output_tensor: String,
    /// How an encoded image becomes the input tensor.
    pub preprocess: Preprocess,
    /// Logits or probabilities.
    pub output_kind: OutputKind,
    /// ONNX Runtime intra-op threads for this model's session.
    pub intra_op_threads: usize,
    /// When idle intra-op threads spin rather than sleep.
    pub intra_op_spinning: Spinning,
    /// Niceness of the model's threads (0 to 19): above 0, they yield the cores to other
    /// models' threads when both have work.
    pub thread_nice: i32,
    /// Most images run together in one session call.
    pub max_batch_size: usize,
    /// ONNX Runtime sessions of the model, each with its own thread and `intra_op_threads`,
    /// sharing the model's queue (Triton's instance group).
    pub instances: usize,
    /// 1 runs first: a batch starts only while no request of a more urgent model (a smaller
    /// number) waits, nor runs while that model is busy (see `scheduler`).
    pub priority: u8,
    /// How long the model thread waits for more requests to fill a batch.
    pub max_queue_delay: Duration,
    /// `sha256:<hex>` of what decides the model's answers (see `digest`); empty until
    /// [`Self::load`].
    pub digest: String,
}

impl ModelSpec {
    /// Number of classes (labels).
    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }

    /// Input tensor shape with a dynamic (-1) batch dimension.
    pub fn input_shape(&self) -> [i64; 4] {
        let [c, h, w] = self
            .preprocess
            .chw()
            .map(|d| i64::try_from(d).unwrap_or(i64::MAX));
        match self.preprocess.layout {
            Layout::Nchw => [-1, c, h, w],
            Layout::Nhwc => [-1, h, w, c],
        }
    }

    /// Reads and validates `dir/config.toml` and the files it names, and computes the digest.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?;
        let folder = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut spec = Self::parse(&config_path, &folder, &text)?;
        spec.onnx_path = dir.join(&spec.onnx_path);
        spec.labels_path = dir.join(&spec.labels_path);
        let onnx = match spec.backend {
            Backend::Null => {
                // No weights; labels only if the folder has them, else one class named "null".
                spec.labels = match std::fs::read_to_string(&spec.labels_path) {
                    Ok(text) => parse_labels(&text).with_context(|| {
                        format!("{}: field `labels_file`", config_path.display())
                    })?,
                    Err(_) => vec!["null".to_owned()],
                };
                Vec::new()
            }
            Backend::Onnx => spec.read_onnx_and_labels()?,
        };
        spec.digest = digest::model_digest(&spec, &onnx);
        Ok(spec)
    }

    /// Reads the labels, and the ONNX file's bytes (for the digest).
    fn read_onnx_and_labels(&mut self) -> anyhow::Result<Vec<u8>> {
        let config = self.config_path.display();
        if !self.onnx_path.is_file() {
            bail!(
                "{config}: field `onnx_file`: {} does not exist",
                self.onnx_path.display()
            );
        }
        let onnx = std::fs::read(&self.onnx_path).with_context(|| {
            format!(
                "{config}: field `onnx_file`: cannot read {}",
                self.onnx_path.display()
            )
        })?;
        let labels_text = std::fs::read_to_string(&self.labels_path).with_context(|| {
            format!(
                "{config}: field `labels_file`: cannot read {}",
                self.labels_path.display()
            )
        })?;
        self.labels =
            parse_labels(&labels_text).with_context(|| format!("{config}: field `labels_file`"))?;
        Ok(onnx)
    }

    /// Parses and validates the text of a `config.toml`, reporting every bad field at once.
    /// File paths are left relative and `labels` empty until [`Self::load`].
    pub fn parse(config_path: &Path, folder: &str, text: &str) -> anyhow::Result<Self> {
        let raw = RawConfig::from_toml(config_path, text)?;
        let name = raw.name.clone().unwrap_or_else(|| folder.to_owned());
        let scaling = raw.check(config_path, &name)?;
        Ok(Self {
            name,
            backend: raw.backend,
            config_path: config_path.to_path_buf(),
            onnx_path: PathBuf::from(raw.onnx_file),
            labels_path: PathBuf::from(raw.labels_file),
            labels: Vec::new(),
            input_tensor: raw.input_tensor,
            output_tensor: raw.output_tensor,
            preprocess: Preprocess {
                width: raw.width,
                height: raw.height,
                layout: raw.layout,
                scaling,
                crop: raw.crop,
            },
            output_kind: raw.output_kind,
            intra_op_threads: raw.intra_op_threads,
            intra_op_spinning: raw.intra_op_spinning,
            thread_nice: raw.thread_nice,
            max_batch_size: raw.max_batch_size,
            instances: raw.instances,
            priority: raw.priority,
            max_queue_delay: Duration::from_micros(raw.max_queue_delay_us),
            digest: String::new(),
        })
    }
}

/// Reads every model of a repository: each sub-folder holding a `config.toml` (sorted by name).
pub fn load_repository(root: &Path) -> anyhow::Result<Vec<ModelSpec>> {
    let entries = std::fs::read_dir(root).with_context(|| {
        format!(
            "cannot read the model repository {} (set TANDEM_MODEL_REPOSITORY)",
            root.display()
        )
    })?;
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", root.display()))?
            .path();
        if path.is_dir() && path.join(CONFIG_FILE).is_file() {
            dirs.push(path);
        } else if path.is_dir() {
            tracing::warn!(folder = %path.display(), "skipping a folder without {CONFIG_FILE}");
        }
    }
    dirs.sort();
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    for dir in &dirs {
        match ModelSpec::load(dir) {
            Ok(spec) => specs.push(spec),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    let mut names = BTreeSet::new();
    for spec in &specs {
        if !names.insert(spec.name.as_str()) {
            problems.push(format!(
                "{}: field `name`: another model is already named {:?}",
                spec.config_path.display(),
                spec.name
            ));
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    if specs.is_empty() {
        bail!(
            "no models in {}: each model is a sub-folder holding {CONFIG_FILE}, its ONNX file and its labels",
            root.display()
        );
    }
    Ok(specs)
}

/// One label per line; the display label is the text before the first ", ".
pub fn parse_labels(text: &str) -> anyhow::Result<Vec<String>> {
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let label = line.split(", ").next().unwrap_or_default().trim();
        if label.is_empty() {
            bail!("line {} is empty: every line must name one class", i + 1);
        }
        labels.push(label.to_owned());
    }
    if labels.is_empty() {
        bail!("the labels file is empty");
    }
    Ok(labels)
}

#[cfg(test)]
#[path = "repository_tests.rs"]
mod tests;
