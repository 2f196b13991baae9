//! The model registry: public model name → the upstream that serves it, the upstream's own id,
//! capability (features) and visibility; and for each upstream, the pool its calls draw
//! credentials from.
//!
//! Built once at start-up (`startup.rs` registers every upstream the configuration enables);
//! dialects parse model names through it and the service routes each request by it, so adding
//! an upstream touches no dialect code.

use std::collections::HashMap;
use std::sync::Arc;

use super::{OwnPoolUpstream, Upstream};
use crate::domain::{ModelError, ModelId, ModelSpec};
use crate::pool::Pool;

/// Where the requests for one upstream's models go.
#[derive(Debug, Clone)]
pub enum Route {
    /// An upstream whose calls are made with members (accounts) of `pool`; the service leases
    /// them and fails over.
    Pooled {
        upstream: Arc<dyn Upstream>,
        pool: Pool,
    },
    /// An upstream with credentials of its own (Flow's tokens), failing over by itself.
    Own(Arc<dyn OwnPoolUpstream>),
}

impl Route {
    /// The estimated input tokens of `request` on this route's upstream.
    pub fn input_tokens(&self, request: &crate::domain::ChatRequest) -> u32 {
        match self {
            Route::Pooled { upstream, .. } => upstream.input_tokens(request),
            Route::Own(upstream) => upstream.input_tokens(request),
        }
    }

    /// Whether the route's models are listed now.
    fn listed(&self) -> bool {
        match self {
            Route::Pooled { .. } => true,
            Route::Own(upstream) => upstream.listed(),
        }
    }
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the model name `{0}` is registered twice")]
    DuplicateModel(String),
    #[error("the upstream `{0}` is registered twice")]
    DuplicateUpstream(&'static str),
    #[error("the model `{model}` names the upstream `{named}` but was registered by `{by}`")]
    WrongUpstream {
        model: String,
        named: &'static str,
        by: &'static str,
    },
}

/// Every model the gateway serves and where each goes.
#[derive(Debug, Clone, Default)]
pub struct ModelRegistry {
    specs: Vec<Arc<ModelSpec>>,
    /// `/v1/models` order.
    listed: Vec<String>,
    routes: HashMap<&'static str, Route>,
}

impl ModelRegistry {
    pub fn new() -> ModelRegistry {
        ModelRegistry::default()
    }

    /// Registers an upstream, the pool it draws from and its models. `listing` is the order
    /// `/v1/models` shows its ids in (`None`: each visible spec's name, in order).
    pub fn register(
        &mut self,
        upstream: Arc<dyn Upstream>,
        pool: Pool,
        specs: Vec<ModelSpec>,
        listing: Option<Vec<String>>,
    ) -> Result<(), RegistryError> {
        let name = upstream.name();
        self.add(name, Route::Pooled { upstream, pool }, specs, listing)
    }

    /// Registers an upstream with credentials of its own and its models (listed in order,
    /// while [`OwnPoolUpstream::listed`] says so).
    pub fn register_own(
        &mut self,
        upstream: Arc<dyn OwnPoolUpstream>,
        specs: Vec<ModelSpec>,
    ) -> Result<(), RegistryError> {
        let name = upstream.name();
        self.add(name, Route::Own(upstream), specs, None)
    }

    fn add(
        &mut self,
        name: &'static str,
        route: Route,
        specs: Vec<ModelSpec>,
        listing: Option<Vec<String>>,
    ) -> Result<(), RegistryError> {
        if self.routes.contains_key(name) {
            return Err(RegistryError::DuplicateUpstream(name));
        }
        for spec in &specs {
            if spec.upstream != name {
                return Err(RegistryError::WrongUpstream {
                    model: spec.name.clone(),
                    named: spec.upstream,
                    by: name,
                });
            }
            if self.specs.iter().any(|s| s.name == spec.name) {
                return Err(RegistryError::DuplicateModel(spec.name.clone()));
            }
        }
        let listing = listing.unwrap_or_else(|| {
            specs
                .iter()
                .filter(|s| s.visible)
                .map(|s| s.name.clone())
                .collect()
        });
        self.specs.extend(specs.into_iter().map(Arc::new));
        self.listed.extend(listing);
        self.routes.insert(name, route);
        Ok(())
    }

    /// A registry of Gemini Business's models with no routes: parses names only (unit tests of
    /// the dialects' parsers).
    #[cfg(test)]
    pub fn gemini_business_names() -> ModelRegistry {
        ModelRegistry {
            specs: super::gemini_business::models::specs()
                .into_iter()
                .map(Arc::new)
                .collect(),
            listed: super::gemini_business::models::listing(),
            routes: HashMap::new(),
        }
    }

    /// Reads a public model name (see [`ModelId::parse_in`]).
    pub fn parse(&self, name: &str) -> Result<ModelId, ModelError> {
        ModelId::parse_in(&self.specs, name)
    }

    /// The models `/v1/models` lists, in order.
    pub fn listed(&self) -> Vec<ModelId> {
        self.listed
            .iter()
            .filter_map(|name| self.parse(name).ok())
            .filter(|model| self.route(model).is_some_and(Route::listed))
            .collect()
    }

    /// Where requests for `model` go (`None` only for a model of another registry).
    pub fn route(&self, model: &ModelId) -> Option<&Route> {
        self.routes.get(model.upstream())
    }

    /// Every registered route (for pool-wide operations).
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }
}
