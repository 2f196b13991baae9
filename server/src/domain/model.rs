//! Public model names: what the gateway knows of a model ([`ModelSpec`], registered by the
//! upstream that serves it) and a parsed name ([`ModelId`]).
//!
//! A public model name is a registered name, or — for models that take them — a base name
//! followed by any combination of the feature suffixes `-image`, `-video` and `-search`, each at
//! most once, in any order (`gemini-2.5-flash-search-image` is the same model as
//! `gemini-2.5-flash-image-search`). Anything else is an unknown model: a clear 404, never a
//! silent fallback to a default (reference defect 31).
//!
//! Which names exist is decided by the model registry (`upstream::registry`); this module only
//! knows how a name is read against a list of specs.

use std::fmt;
use std::sync::Arc;

/// The tools a model asks the upstream for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    pub image: bool,
    pub video: bool,
    pub search: bool,
}

impl Features {
    /// No feature at all: for a suffix-taking model, "may use every tool".
    pub fn is_all_tools(self) -> bool {
        !self.image && !self.video && !self.search
    }
}

/// One public (base) model, as the upstream serving it registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The public base name, e.g. `gemini-2.5-flash`.
    pub name: String,
    /// The upstream that serves it (its `Upstream::name`).
    pub upstream: &'static str,
    /// The upstream's own id for the model (e.g. Gemini Business's
    /// `assistGenerationConfig.modelId`).
    pub upstream_id: String,
    /// Whether the feature suffixes `-image`, `-video` and `-search` apply to the name.
    pub suffixes: bool,
    /// Features the model always has (an image-only model has `image`); suffixes add to them.
    pub features: Features,
    /// Listed by `/v1/models` (a hidden model can still be used by name).
    pub visible: bool,
}

/// A parsed public model name, bound to its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    public: String,
    spec: Arc<ModelSpec>,
    features: Features,
}

/// Why a model name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("the model parameter is required")]
    Missing,
    #[error("the model `{0}` does not exist")]
    Unknown(String),
}

const SUFFIXES: [&str; 3] = ["-image", "-video", "-search"];

impl ModelId {
    /// Reads `name` against `specs`. A leading `models/` (Gemini style) is accepted. An exact
    /// spec name wins; otherwise suffixes are peeled off the end (each at most once) and the
    /// rest must name a suffix-taking spec.
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use business2api::domain::{ModelError, ModelId, ModelSpec};
    /// use business2api::upstream::gemini_business::models;
    ///
    /// let specs: Vec<Arc<ModelSpec>> = models::specs().into_iter().map(Arc::new).collect();
    ///
    /// // Suffixes in any order, a Gemini-style `models/` prefix accepted.
    /// let model = ModelId::parse_in(&specs, "models/gemini-2.5-flash-search-image")?;
    /// assert_eq!(model.public_name(), "gemini-2.5-flash-search-image");
    /// assert_eq!(model.upstream_id(), "gemini-2.5-flash");
    /// let features = model.features();
    /// assert!(features.image && features.search && !features.video);
    ///
    /// // No suffix: the model may use every tool.
    /// assert!(ModelId::parse_in(&specs, "gemini-2.5-pro")?.features().is_all_tools());
    ///
    /// // Anything else is an unknown model, never a silent fallback.
    /// assert_eq!(
    ///     ModelId::parse_in(&specs, "gpt-4o"),
    ///     Err(ModelError::Unknown("gpt-4o".to_owned()))
    /// );
    /// assert!(ModelId::parse_in(&specs, "gemini-2.5-flash-image-image").is_err());
    /// assert_eq!(ModelId::parse_in(&specs, " "), Err(ModelError::Missing));
    /// # Ok::<(), ModelError>(())
    /// ```
    pub fn parse_in(specs: &[Arc<ModelSpec>], name: &str) -> Result<ModelId, ModelError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ModelError::Missing);
        }
        let bare = name.strip_prefix("models/").unwrap_or(name);
        if let Some(spec) = specs.iter().find(|s| s.name == bare) {
            return Ok(ModelId {
                public: bare.to_owned(),
                features: spec.features,
                spec: Arc::clone(spec),
            });
        }
        let mut rest = bare;
        let mut features = Features::default();
        // Peel suffixes off the end; each may occur once.
        while let Some(suffix) = SUFFIXES.iter().find(|s| rest.ends_with(**s)) {
            let flag = match *suffix {
                "-image" => &mut features.image,
                "-video" => &mut features.video,
                _ => &mut features.search,
            };
            if *flag {
                return Err(ModelError::Unknown(name.to_owned()));
            }
            *flag = true;
            rest = &rest[..rest.len() - suffix.len()];
        }
        let spec = specs
            .iter()
            .find(|s| s.suffixes && s.name == rest)
            .ok_or_else(|| ModelError::Unknown(name.to_owned()))?;
        let base = spec.features;
        Ok(ModelId {
            public: bare.to_owned(),
            features: Features {
                image: features.image || base.image,
                video: features.video || base.video,
                search: features.search || base.search,
            },
            spec: Arc::clone(spec),
        })
    }

    /// The name as the client wrote it (without a `models/` prefix); echoed in responses.
    pub fn public_name(&self) -> &str {
        &self.public
    }

    /// The spec of the base model.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The spec of the base model, shared (a metrics label holds it without copying the name).
    pub fn shared_spec(&self) -> Arc<ModelSpec> {
        Arc::clone(&self.spec)
    }

    /// The upstream that serves this model.
    pub fn upstream(&self) -> &'static str {
        self.spec.upstream
    }

    /// The upstream's own id for the model.
    pub fn upstream_id(&self) -> &str {
        &self.spec.upstream_id
    }

    pub fn features(&self) -> Features {
        self.features
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<Arc<ModelSpec>> {
        let spec = |name: &str, suffixes: bool, features: Features| {
            Arc::new(ModelSpec {
                name: name.to_owned(),
                upstream: "test",
                upstream_id: format!("up-{name}"),
                suffixes,
                features,
                visible: true,
            })
        };
        vec![
            spec("base-1", true, Features::default()),
            spec("base-1-pro", true, Features::default()),
            spec(
                "painter",
                false,
                Features {
                    image: true,
                    ..Features::default()
                },
            ),
        ]
    }

    #[test]
    fn exact_names_and_suffixes() {
        let s = specs();
        let m = ModelId::parse_in(&s, "base-1").unwrap();
        assert!(m.features().is_all_tools());
        assert_eq!(m.upstream_id(), "up-base-1");
        assert_eq!(m.upstream(), "test");
        let a = ModelId::parse_in(&s, "base-1-pro-image-search").unwrap();
        let b = ModelId::parse_in(&s, "models/base-1-pro-search-image").unwrap();
        assert_eq!(a.features(), b.features());
        assert_eq!(a.upstream_id(), "up-base-1-pro");
        assert_eq!(b.public_name(), "base-1-pro-search-image");
        let p = ModelId::parse_in(&s, "painter").unwrap();
        assert!(p.features().image);
    }

    #[test]
    fn unknown_and_malformed_names_are_refused() {
        let s = specs();
        for bad in [
            "gpt-4o",
            "base-1-image-image",
            "painter-image",
            "base-1-",
            "-image",
            "BASE-1",
        ] {
            assert!(
                matches!(ModelId::parse_in(&s, bad), Err(ModelError::Unknown(_))),
                "{bad}"
            );
        }
        assert_eq!(ModelId::parse_in(&s, " "), Err(ModelError::Missing));
    }
}
