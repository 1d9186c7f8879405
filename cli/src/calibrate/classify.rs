//! Both models' answers for each image, from the model server (Open Inference Protocol gRPC,
//! through `tandem_core`'s `ModelClient`); a transient failure is tried again a few times.

use std::{path::Path, time::Duration};

use backon::Retryable as _;
use bytes::Bytes;
use tandem_core::{
    job::Prediction,
    model_client::{ClassifyError, ModelClient},
};

use super::curve::Sample;
use crate::error::CliError;

/// The longest one classification may take.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Tries after the first for a model server that is down, busy or slow.
const RETRIES: usize = 3;

/// What became of one image.
#[derive(Debug)]
pub enum Outcome {
    Sample(Sample),
    /// The model server refused the image (not decodable, say): the reason.
    Rejected(String),
}

/// The model server and the two models.
#[derive(Debug)]
pub struct Models {
    client: ModelClient,
    url: String,
    fast: String,
    slow: String,
}

impl Models {
    pub fn new(url: &str, fast: &str, slow: &str) -> Result<Self, CliError> {
        let client = ModelClient::new(url, TIMEOUT).map_err(|e| {
            CliError::Usage(format!("{e} (--model-server, TANDEM_MODEL_SERVER_URL)"))
        })?;
        Ok(Self {
            client,
            url: url.to_owned(),
            fast: fast.to_owned(),
            slow: slow.to_owned(),
        })
    }

    /// Reads `path` and classifies it with both models.
    pub async fn classify(&self, path: &Path) -> Result<Outcome, CliError> {
        let image = tokio::fs::read(path)
            .await
            .map(Bytes::from)
            .map_err(|source| CliError::Io {
                path: path.to_owned(),
                source,
            })?;
        let flags = "--fast-model or TANDEM_FAST_MODEL";
        let fast = match self.call(&self.fast, &image, flags).await? {
            Ok(fast) => fast,
            Err(reason) => return Ok(Outcome::Rejected(reason)),
        };
        let flags = "--slow-model or TANDEM_SLOW_MODEL";
        let slow = match self.call(&self.slow, &image, flags).await? {
            Ok(slow) => slow,
            Err(reason) => return Ok(Outcome::Rejected(reason)),
        };
        Ok(Outcome::Sample(Sample {
            fast_label: fast.label,
            fast_score: fast.score,
            slow_label: slow.label,
            slow_ms: slow.inference_ms,
        }))
    }

    /// One model's answer; `Ok(Err(reason))` when the image was refused, `Err` when nothing
    /// more can be classified (no such model, no model server).
    async fn call(
        &self,
        model: &str,
        image: &Bytes,
        flags: &str,
    ) -> Result<Result<Prediction, String>, CliError> {
        let attempt = || {
            self.client
                .classify(model, image.clone(), 1, Default::default())
        };
        let backoff = tandem_core::retry::backoff().with_max_times(RETRIES);
        match attempt
            .retry(backoff)
            .when(ClassifyError::is_transient)
            .await
        {
            Ok(prediction) => Ok(Ok(prediction)),
            Err(ClassifyError::Rejected(reason)) => Ok(Err(reason)),
            Err(ClassifyError::ModelNotFound(detail)) => Err(CliError::ModelServer {
                url: self.url.clone(),
                detail: format!("it has no model {model:?} ({detail}); set {flags}"),
            }),
            Err(error) => Err(CliError::ModelServer {
                url: self.url.clone(),
                detail: format!(
                    "it is unreachable or failing: {error} (is it running? set --model-server \
                     or TANDEM_MODEL_SERVER_URL)"
                ),
            }),
        }
    }
}
