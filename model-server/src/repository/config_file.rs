//! A model's `config.toml` as written, and the check of each of its fields.
//!
//! Every bad field is reported, all at once, each as `<file>: field `<name>`: <problem>`.

use std::path::Path;

use anyhow::bail;
use serde::Deserialize;

use super::{Backend, OutputKind, Spinning};
use crate::{
    preprocess::{Crop, Layout, Scaling},
    scheduler::LOWEST_PRIORITY,
};

const MAX_SIDE: u32 = 8192;
const MAX_THREADS: usize = 256;
const MAX_BATCH: usize = 1024;
const MAX_DELAY_US: u64 = 1_000_000;
const MAX_INSTANCES: usize = 64;

/// The fields of `config.toml`, defaults filled in, not yet checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) backend: Backend,
    #[serde(default = "default_onnx")]
    pub(super) onnx_file: String,
    #[serde(default = "default_labels")]
    pub(super) labels_file: String,
    pub(super) input_tensor: String,
    pub(super) output_tensor: String,
    pub(super) width: u32,
    pub(super) height: u32,
    #[serde(default)]
    pub(super) layout: Layout,
    scaling: RawScaling,
    #[serde(default)]
    pub(super) crop: Crop,
    #[serde(default)]
    pub(super) output_kind: OutputKind,
    #[serde(default = "default_threads")]
    pub(super) intra_op_threads: usize,
    #[serde(default)]
    pub(super) intra_op_spinning: Spinning,
    #[serde(default)]
    pub(super) thread_nice: i32,
    #[serde(default = "default_batch")]
    pub(super) max_batch_size: usize,
    #[serde(default)]
    pub(super) max_queue_delay_us: u64,
    #[serde(default = "default_instances")]
    pub(super) instances: usize,
    #[serde(default = "default_priority")]
    pub(super) priority: u8,
}

fn default_onnx() -> String {
    "model.onnx".into()
}
fn default_labels() -> String {
    "labels.txt".into()
}
fn default_threads() -> usize {
    1
}
fn default_batch() -> usize {
    8
}
fn default_instances() -> usize {
    1
}
fn default_priority() -> u8 {
    1
}

/// The problems found in one file, each naming the file and the field.
struct FieldErrors {
    file: String,
    errors: Vec<String>,
}

impl FieldErrors {
    fn field(&mut self, name: &str, problem: impl std::fmt::Display) {
        self.errors
            .push(format!("{}: field `{name}`: {problem}", self.file));
    }

    /// `value` must lie in `range`.
    fn in_range<T: PartialOrd + std::fmt::Display>(
        &mut self,
        name: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
    ) {
        if !range.contains(&value) {
            let (low, high) = range.into_inner();
            self.field(name, format!("{value} must be between {low} and {high}"));
        }
    }
}

impl RawConfig {
    /// Reads the TOML; a syntax error, a missing field or an unknown one names the file.
    pub(super) fn from_toml(config_path: &Path, text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {}",
                config_path.display(),
                e.to_string().trim_end().replace('\n', "\n    ")
            )
        })
    }

    /// Checks every field of the model `name`; all bad fields are reported together. Returns
    /// the scaling, the one field that needs more than a range check.
    pub(super) fn check(&self, config_path: &Path, name: &str) -> anyhow::Result<Scaling> {
        let mut errors = FieldErrors {
            file: config_path.display().to_string(),
            errors: Vec::new(),
        };
        check_name(name, &mut errors);
        self.check_names_are_given(&mut errors);
        errors.in_range("width", self.width, 1..=MAX_SIDE);
        errors.in_range("height", self.height, 1..=MAX_SIDE);
        let scaling = self.scaling.to_scaling().unwrap_or_else(|problem| {
            errors.field("scaling", problem);
            Scaling::Affine {
                scale: 1.0,
                offset: 0.0,
            }
        });
        self.check_threads(&mut errors);
        self.check_batching(&mut errors);
        if !errors.errors.is_empty() {
            bail!(
                "invalid model configuration:\n  - {}",
                errors.errors.join("\n  - ")
            );
        }
        Ok(scaling)
    }

    /// The tensor and file names must not be empty.
    fn check_names_are_given(&self, errors: &mut FieldErrors) {
        for (key, value) in [
            ("input_tensor", &self.input_tensor),
            ("output_tensor", &self.output_tensor),
            ("onnx_file", &self.onnx_file),
            ("labels_file", &self.labels_file),
        ] {
            if value.trim().is_empty() {
                errors.field(key, "must not be empty");
            }
        }
    }

    /// Intra-op threads and instances within bounds, a known priority; niceness only ever
    /// nicer.
    fn check_threads(&self, errors: &mut FieldErrors) {
        errors.in_range("intra_op_threads", self.intra_op_threads, 1..=MAX_THREADS);
        errors.in_range("instances", self.instances, 1..=MAX_INSTANCES);
        errors.in_range("priority", self.priority, 1..=LOWEST_PRIORITY);
        if !(0..=19).contains(&self.thread_nice) {
            errors.field(
                "thread_nice",
                format!(
                    "{} must be between 0 and 19 (a model's threads can only be made nicer)",
                    self.thread_nice
                ),
            );
        }
    }

    /// A batch of at least one image, and a queue delay of at most a second.
    fn check_batching(&self, errors: &mut FieldErrors) {
        errors.in_range("max_batch_size", self.max_batch_size, 1..=MAX_BATCH);
        if self.max_queue_delay_us > MAX_DELAY_US {
            errors.field(
                "max_queue_delay_us",
                format!(
                    "{} is over the maximum of {MAX_DELAY_US} (1 s)",
                    self.max_queue_delay_us
                ),
            );
        }
    }
}

/// The name clients use: letters, digits, `_`, `-`, `.`.
fn check_name(name: &str, errors: &mut FieldErrors) {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        errors.field(
            "name",
            format!("{name:?} must be non-empty and use only letters, digits, '_', '-', '.'"),
        );
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScaling {
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
    scale: Option<f32>,
    offset: Option<f32>,
}

impl RawScaling {
    fn to_scaling(&self) -> Result<Scaling, String> {
        const HELP: &str =
            "give either { mean = [r, g, b], std = [r, g, b] } or { scale = s, offset = o }";
        match (self.mean, self.std, self.scale, self.offset) {
            (Some(mean), Some(std), None, None) => {
                if mean.iter().any(|m| !m.is_finite()) {
                    return Err("`mean` values must be finite numbers".into());
                }
                if std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
                    return Err("`std` values must be finite and greater than 0".into());
                }
                Ok(Scaling::MeanStd { mean, std })
            }
            (None, None, Some(scale), Some(offset)) => {
                if !scale.is_finite() || scale == 0.0 || !offset.is_finite() {
                    return Err("`scale` must be finite and non-zero, `offset` finite".into());
                }
                Ok(Scaling::Affine { scale, offset })
            }
            _ => Err(HELP.into()),
        }
    }
}
