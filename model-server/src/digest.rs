//! A model's identity digest, `sha256:<hex>`, reported as the `model_digest` parameter.
//!
//! Clients cache answers under it, so it covers everything that decides a model's answers and
//! nothing that only changes how fast they come. Hashed, each field length-prefixed: a format
//! tag ([`FORMAT`]), the backend, the ONNX file's bytes (none for the null model), the input and
//! output tensor names, the preprocessing (width, height, layout, crop, scaling as exact `f32`
//! bits), the output kind and the display labels (as parsed from the labels file: the text after
//! a line's first ", " never reaches an answer). Left out: the model's name and file paths (the
//! same files elsewhere are the same model), threads, spinning, niceness and batching.

use std::collections::HashMap;

use anyhow::{Context, bail};
use sha2::{Digest as _, Sha256};
use tandem_proto::{InferParameter, MODEL_DIGEST_PARAMETER, string_parameter};

use crate::{
    preprocess::{Crop, Layout, Preprocess, Scaling},
    repository::{Backend, ModelSpec, OutputKind},
};

/// Names the serialization below. Bump it when that changes, or when this server's own
/// decoding or preprocessing code starts giving other answers for the same files.
pub const FORMAT: &str = "tandem-model-digest/1";

/// The digest of `spec` with the ONNX file `onnx` (empty for the null model).
pub fn model_digest(spec: &ModelSpec, onnx: &[u8]) -> String {
    // Destructured in full: a new field does not compile until it is put in or left out here.
    let ModelSpec {
        name: _,
        backend,
        config_path: _,
        onnx_path: _,
        labels_path: _,
        labels,
        input_tensor,
        output_tensor,
        preprocess,
        output_kind,
        intra_op_threads: _,
        intra_op_spinning: _,
        thread_nice: _,
        max_batch_size: _,
        instances: _,
        priority: _,
        max_queue_delay: _,
        digest: _,
    } = spec;
    let mut hasher = Fields(Sha256::new());
    hasher.field(FORMAT.as_bytes());
    hasher.field(match backend {
        Backend::Onnx => b"onnx",
        Backend::Null => b"null",
    });
    hasher.field(onnx);
    hasher.field(input_tensor.as_bytes());
    hasher.field(output_tensor.as_bytes());
    hash_preprocess(&mut hasher, preprocess);
    hasher.field(match output_kind {
        OutputKind::Logits => b"logits",
        OutputKind::Probabilities => b"probabilities",
    });
    hasher.field(&(labels.len() as u64).to_le_bytes());
    for label in labels {
        hasher.field(label.as_bytes());
    }
    let hex: String = hasher
        .0
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn hash_preprocess(hasher: &mut Fields, preprocess: &Preprocess) {
    let Preprocess {
        width,
        height,
        layout,
        scaling,
        crop,
    } = preprocess;
    hasher.field(&width.to_le_bytes());
    hasher.field(&height.to_le_bytes());
    hasher.field(match layout {
        Layout::Nchw => b"NCHW",
        Layout::Nhwc => b"NHWC",
    });
    hasher.field(match crop {
        Crop::Center => b"center",
        Crop::None => b"none",
    });
    let (style, values): (&[u8], Vec<f32>) = match *scaling {
        Scaling::MeanStd { mean, std } => (b"mean_std", [mean, std].concat()),
        Scaling::Affine { scale, offset } => (b"affine", vec![scale, offset]),
    };
    hasher.field(style);
    for value in values {
        hasher.field(&value.to_bits().to_le_bytes());
    }
}

/// A hasher fed length-prefixed fields, so that no two field lists hash alike.
struct Fields(Sha256);

impl Fields {
    fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }
}

/// Reads the ONNX file of `spec` for its session: the bytes the session is made from are the
/// ones its reported digest covers, or loading fails (the file changed since the repository
/// was read).
pub fn read_onnx(spec: &ModelSpec) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(&spec.onnx_path)
        .with_context(|| format!("cannot read {}", spec.onnx_path.display()))?;
    let digest = model_digest(spec, &bytes);
    if digest != spec.digest {
        bail!(
            "{} changed after the model repository was read (its digest is now {digest}, not {}); \
             restart the model server to serve the new file",
            spec.onnx_path.display(),
            spec.digest
        );
    }
    Ok(bytes)
}

/// The response parameters every answer about `spec` carries: its digest (none before
/// [`ModelSpec::load`] set one).
pub fn parameters(spec: &ModelSpec) -> HashMap<String, InferParameter> {
    if spec.digest.is_empty() {
        return HashMap::new();
    }
    [(
        MODEL_DIGEST_PARAMETER.to_owned(),
        string_parameter(spec.digest.clone()),
    )]
    .into()
}

#[cfg(test)]
#[path = "digest_tests.rs"]
mod tests;
