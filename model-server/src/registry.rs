//! The served models by name, their readiness, and loading them in the background.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use crate::{
    error::ModelError,
    repository::{Backend, ModelSpec},
    runner::ModelRunner,
    runtime,
    scheduler::Scheduler,
};

/// Every model's only version.
pub const VERSION: &str = "1";

/// A configured model and, once loaded, its runner.
#[derive(Debug)]
pub struct Model {
    pub spec: Arc<ModelSpec>,
    runner: OnceLock<ModelRunner>,
}

impl Model {
    /// The runner, or `NotReady` while the session is loading.
    pub fn runner(&self) -> Result<&ModelRunner, ModelError> {
        self.runner
            .get()
            .ok_or_else(|| ModelError::NotReady(self.spec.name.clone()))
    }

    /// Whether the session is loaded.
    pub fn is_ready(&self) -> bool {
        self.runner.get().is_some()
    }
}

/// All models of the repository, known from start; ready once loaded.
#[derive(Debug)]
pub struct Registry {
    models: BTreeMap<String, Arc<Model>>,
    /// Shared by every model: strict priority and a budget of inference threads across them.
    scheduler: Arc<Scheduler>,
}

impl Registry {
    /// Models from validated specs, none loaded yet, running at most `inference_threads`
    /// ONNX Runtime threads at once.
    pub fn new(specs: Vec<ModelSpec>, inference_threads: usize) -> Self {
        let models = specs
            .into_iter()
            .map(|spec| {
                let model = Model {
                    spec: Arc::new(spec),
                    runner: OnceLock::new(),
                };
                (model.spec.name.clone(), Arc::new(model))
            })
            .collect();
        Self {
            models,
            scheduler: Scheduler::new(inference_threads),
        }
    }

    /// A model by name and version ("" or "1").
    pub fn get(&self, name: &str, version: &str) -> Result<&Arc<Model>, ModelError> {
        let model = self
            .models
            .get(name)
            .ok_or_else(|| ModelError::UnknownModel {
                name: name.to_owned(),
                available: self.names().join(", "),
            })?;
        if !version.is_empty() && version != VERSION {
            return Err(ModelError::UnknownVersion {
                model: name.to_owned(),
                version: version.to_owned(),
            });
        }
        Ok(model)
    }

    /// Model names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }

    /// True once every model is loaded.
    pub fn is_ready(&self) -> bool {
        self.models.values().all(|m| m.is_ready())
    }

    /// Loads ONNX Runtime (unless every model is a null model) and every model's session
    /// (each on its own thread, in parallel). The first failure is returned; the registry stays
    /// not ready.
    pub async fn load_all(&self, dylib: PathBuf) -> anyhow::Result<()> {
        let needs_ort = self
            .models
            .values()
            .any(|m| m.spec.backend == Backend::Onnx);
        let environment = if needs_ort {
            let environment = tokio::task::spawn_blocking(move || runtime::environment(&dylib))
                .await
                .map_err(|e| anyhow::anyhow!("loading ONNX Runtime panicked: {e}"))??;
            Some(environment)
        } else {
            None
        };
        let starts = self.models.values().map(|model| {
            let environment = environment.clone();
            let scheduler = &self.scheduler;
            async move {
                let runner = match (model.spec.backend, environment) {
                    (Backend::Null, _) => ModelRunner::start_null(model.spec.clone(), scheduler)?,
                    (Backend::Onnx, Some(environment)) => {
                        ModelRunner::start(model.spec.clone(), environment, scheduler).await?
                    }
                    (Backend::Onnx, None) => anyhow::bail!("ONNX Runtime was not loaded"),
                };
                // Set once: load_all runs once per registry.
                let _ = model.runner.set(runner);
                anyhow::Ok(())
            }
        });
        futures::future::try_join_all(starts).await?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;

    /// A `backend = "null"` model named `name` in a folder of `root`, 2 x 2 images, with the
    /// extra `config.toml` lines `extra`; loaded as the server loads it.
    pub(crate) fn null_model(root: &Path, name: &str, extra: &str) -> ModelSpec {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "backend = \"null\"\ninput_tensor = \"input\"\noutput_tensor = \"scores\"\n\
                 width = 2\nheight = 2\nscaling = {{ scale = 1.0, offset = 0.0 }}\n{extra}"
            ),
        )
        .unwrap();
        ModelSpec::load(&dir).unwrap()
    }

    #[tokio::test]
    async fn a_null_model_loads_without_onnx_runtime_and_scores_every_image_alike() {
        let root = tempfile::tempdir().unwrap();
        let spec = null_model(root.path(), "null", "");
        assert_eq!(spec.backend, Backend::Null);
        assert_eq!(spec.labels, ["null"], "no labels file: one class");

        let registry = Registry::new(vec![spec], 2);
        assert!(!registry.is_ready());
        // No ONNX Runtime is needed: the library path is never opened.
        registry
            .load_all(Path::new("/nonexistent/libonnxruntime.so").to_path_buf())
            .await
            .unwrap();
        assert!(registry.is_ready());
        let runner = registry.get("null", "").unwrap().runner().unwrap();
        let output = runner.infer(vec![0.5; 3 * 2 * 2 * 3], 3).await.unwrap();
        assert_eq!(output, [0.0; 3], "three images, one class each, logit 0");
    }
}
