//! A model's ONNX Runtime session: creating it, checking it against the model's `config.toml`,
//! and running one batch on it.

use std::time::Instant;

use anyhow::bail;
use ort::{
    environment::Environment,
    session::Session,
    value::{Outlet, TensorElementType, TensorRef, ValueType},
};

use crate::{
    digest,
    repository::{ModelSpec, Spinning},
};

/// Creates the session, from the very bytes the model's digest covers, and checks it against
/// the configuration.
pub(super) fn load_session(spec: &ModelSpec, environment: &Environment) -> anyhow::Result<Session> {
    let started = Instant::now();
    let ort = |e: ort::Error<_>| anyhow::anyhow!("{e}");
    let mut builder = Session::builder(environment)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_intra_threads(spec.intra_op_threads)
        .map_err(ort)?
        .with_inter_threads(1)
        .map_err(ort)?
        .with_intra_op_spinning(spec.intra_op_spinning != Spinning::Never)
        .map_err(ort)?
        .with_config_entry(
            "session.force_spinning_stop",
            if spec.intra_op_spinning == Spinning::Run {
                "1"
            } else {
                "0"
            },
        )
        .map_err(ort)?;
    let onnx = digest::read_onnx(spec)?;
    let session = builder
        .commit_from_memory(&onnx)
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", spec.onnx_path.display()))?;
    check_signature(&session, spec)?;
    tracing::info!(
        model = %spec.name,
        file = %spec.onnx_path.display(),
        threads = spec.intra_op_threads,
        spinning = ?spec.intra_op_spinning,
        nice = spec.thread_nice,
        max_batch_size = spec.max_batch_size,
        ms = started.elapsed().as_millis(),
        "model loaded"
    );
    Ok(session)
}

/// The session's input and output must be what `config.toml` says.
fn check_signature(session: &Session, spec: &ModelSpec) -> anyhow::Result<()> {
    let config = spec.config_path.display();
    let model = spec.onnx_path.display();
    if session.inputs().len() != 1 {
        bail!(
            "{config}: {model} has {} inputs ({}); only single-input classifiers are supported",
            session.inputs().len(),
            names(session.inputs())
        );
    }
    let input = named_outlet(session.inputs(), &spec.input_tensor, "input", spec)?;
    let output = named_outlet(session.outputs(), &spec.output_tensor, "output", spec)?;
    let expected = spec.input_shape();
    match input.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } if shape.len() == 4
            && shape
                .iter()
                .zip(expected)
                .skip(1)
                .all(|(&got, want)| got < 0 || got == want) => {}
        other => bail!(
            "{config}: fields `width`/`height`/`layout`: {model}'s input {:?} is {other:?}, \
             but the configuration describes float32 {expected:?}",
            spec.input_tensor
        ),
    }
    let classes = i64::try_from(spec.num_classes()).unwrap_or(i64::MAX);
    match output.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } if shape.len() == 2 && (shape[1] < 0 || shape[1] == classes) => Ok(()),
        other => bail!(
            "{config}: fields `output_tensor`/`labels_file`: {model}'s output {:?} is {other:?}, \
             but there are {classes} labels (expected float32 [-1, {classes}])",
            spec.output_tensor
        ),
    }
}

/// The session's input or output (`kind`) that `config.toml`'s `{kind}_tensor` names.
fn named_outlet<'s>(
    outlets: &'s [Outlet],
    name: &str,
    kind: &str,
    spec: &ModelSpec,
) -> anyhow::Result<&'s Outlet> {
    outlets.iter().find(|o| o.name() == name).ok_or_else(|| {
        let plural = if outlets.len() == 1 { "" } else { "s" };
        anyhow::anyhow!(
            "{}: field `{kind}_tensor`: {} has no {kind} {name:?} (its {kind}{plural}: {})",
            spec.config_path.display(),
            spec.onnx_path.display(),
            names(outlets)
        )
    })
}

/// The outlets' names, for error messages.
fn names(outlets: &[Outlet]) -> String {
    outlets
        .iter()
        .map(|o| o.name().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs one batch: `input` holds `batch` images; returns `batch * classes` values.
pub(super) fn infer(
    session: &mut Session,
    spec: &ModelSpec,
    input: &[f32],
    batch: usize,
) -> Result<Vec<f32>, String> {
    let [_, a, b, c] = spec.input_shape();
    let rows = i64::try_from(batch).map_err(|e| e.to_string())?;
    let tensor = TensorRef::from_array_view(([rows, a, b, c], input)).map_err(|e| e.to_string())?;
    let outputs = session
        .run(ort::inputs![spec.input_tensor.as_str() => tensor])
        .map_err(|e| format!("inference failed: {e}"))?;
    let value = outputs
        .get(&spec.output_tensor)
        .ok_or_else(|| format!("no output {:?}", spec.output_tensor))?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    let classes = i64::try_from(spec.num_classes()).map_err(|e| e.to_string())?;
    if **shape != [rows, classes] {
        return Err(format!(
            "output {:?} has shape {shape}, expected [{rows}, {classes}]",
            spec.output_tensor
        ));
    }
    Ok(data.to_vec())
}
