//! The served models by name, their readiness, and loading them in the background.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use crate::{error::ModelError, repository::ModelSpec, runner::ModelRunner, runtime};

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
}

impl Registry {
    /// Models from validated specs, none loaded yet.
    pub fn new(specs: Vec<ModelSpec>) -> Self {
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
        Self { models }
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

    /// Loads ONNX Runtime and every model's session (each on its own thread, in parallel).
    /// The first failure is returned; the registry stays not ready.
    pub async fn load_all(&self, dylib: PathBuf) -> anyhow::Result<()> {
        let environment = tokio::task::spawn_blocking(move || runtime::environment(&dylib))
            .await
            .map_err(|e| anyhow::anyhow!("loading ONNX Runtime panicked: {e}"))??;
        let starts = self.models.values().map(|model| {
            let environment = environment.clone();
            async move {
                let runner = ModelRunner::start(model.spec.clone(), environment).await?;
                // Set once: load_all runs once per registry.
                let _ = model.runner.set(runner);
                anyhow::Ok(())
            }
        });
        futures::future::try_join_all(starts).await?;
        Ok(())
    }
}
