//! Public model names, their feature suffixes, and the one table that maps them to upstream ids.
//!
//! A public model name is a base name followed by any combination of the feature suffixes
//! `-image`, `-video` and `-search`, each at most once, in any order
//! (`gemini-2.5-flash-search-image` is the same model as `gemini-2.5-flash-image-search`).
//! No suffix means "every tool". Anything else is an unknown model: a clear 404, never a silent
//! fallback to the workspace default (reference defect 31).

use std::fmt;

/// The base models the gateway serves, in the order `/v1/models` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BaseModel {
    Gemini25Flash,
    Gemini25Pro,
    Gemini3ProPreview,
    Gemini3Pro,
    Gemini3FlashPreview,
    Gemini3Flash,
    Gemini25FlashPreviewLatest,
}

/// The public-name → upstream `modelId` table, in one place.
///
/// Every base model is sent upstream as `assistGenerationConfig.modelId`; the reference sent no id
/// for the last three and silently got the workspace default. If the upstream does not know an id
/// it answers 400, which reaches the client as a clear error.
const BASE_MODELS: [(BaseModel, &str, &str); 7] = [
    (
        BaseModel::Gemini25Flash,
        "gemini-2.5-flash",
        "gemini-2.5-flash",
    ),
    (BaseModel::Gemini25Pro, "gemini-2.5-pro", "gemini-2.5-pro"),
    (
        BaseModel::Gemini3ProPreview,
        "gemini-3-pro-preview",
        "gemini-3-pro-preview",
    ),
    (BaseModel::Gemini3Pro, "gemini-3-pro", "gemini-3-pro"),
    (
        BaseModel::Gemini3FlashPreview,
        "gemini-3-flash-preview",
        "gemini-3-flash-preview",
    ),
    (BaseModel::Gemini3Flash, "gemini-3-flash", "gemini-3-flash"),
    (
        BaseModel::Gemini25FlashPreviewLatest,
        "gemini-2.5-flash-preview-latest",
        "gemini-2.5-flash-preview-latest",
    ),
];

impl BaseModel {
    /// Every base model, in listing order.
    pub fn all() -> impl Iterator<Item = BaseModel> {
        BASE_MODELS.iter().map(|(m, _, _)| *m)
    }

    fn entry(self) -> &'static (BaseModel, &'static str, &'static str) {
        // The table holds every variant exactly once (tested), so the fallback is unreachable;
        // it exists only to avoid a panic path.
        BASE_MODELS
            .iter()
            .find(|(m, _, _)| *m == self)
            .unwrap_or(&BASE_MODELS[0])
    }

    /// The public name, e.g. `gemini-2.5-flash`.
    pub fn public_name(self) -> &'static str {
        self.entry().1
    }

    /// The upstream `assistGenerationConfig.modelId`.
    pub fn upstream_id(self) -> &'static str {
        self.entry().2
    }

    fn from_public_name(name: &str) -> Option<BaseModel> {
        BASE_MODELS
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(m, _, _)| *m)
    }
}

/// The tools a model asks the upstream for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    pub image: bool,
    pub video: bool,
    pub search: bool,
}

impl Features {
    /// No suffix at all: the model may use every tool.
    pub fn is_all_tools(self) -> bool {
        !self.image && !self.video && !self.search
    }
}

/// A parsed public model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    public: String,
    base: BaseModel,
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
    /// Parses a public model name. A leading `models/` (Gemini style) is accepted.
    pub fn parse(name: &str) -> Result<ModelId, ModelError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ModelError::Missing);
        }
        let bare = name.strip_prefix("models/").unwrap_or(name);
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
        let base = BaseModel::from_public_name(rest)
            .ok_or_else(|| ModelError::Unknown(name.to_owned()))?;
        Ok(ModelId {
            public: bare.to_owned(),
            base,
            features,
        })
    }

    /// The name as the client wrote it (without a `models/` prefix); echoed in responses.
    pub fn public_name(&self) -> &str {
        &self.public
    }

    pub fn base(&self) -> BaseModel {
        self.base
    }

    pub fn features(&self) -> Features {
        self.features
    }

    /// The model ids `/v1/models` lists: each base model plain, then with `-image`, `-video` and
    /// `-search` (the reference's 28 ids, in its order).
    pub fn listed() -> Vec<String> {
        let bases: Vec<BaseModel> = BaseModel::all().collect();
        let mut out = Vec::with_capacity(bases.len() * 4);
        // The reference groups the first four base models by suffix, then lists the rest per base.
        let (grouped, per_base) = bases.split_at(4);
        for suffix in ["", "-image", "-video", "-search"] {
            for base in grouped {
                out.push(format!("{}{suffix}", base.public_name()));
            }
        }
        for base in per_base {
            for suffix in ["", "-image", "-video", "-search"] {
                out.push(format!("{}{suffix}", base.public_name()));
            }
        }
        out
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

    #[test]
    fn table_covers_every_base_model_once() {
        for m in BaseModel::all() {
            assert_eq!(BASE_MODELS.iter().filter(|(b, _, _)| *b == m).count(), 1);
            assert_eq!(BaseModel::from_public_name(m.public_name()), Some(m));
        }
    }

    #[test]
    fn plain_model_means_all_tools() {
        let m = ModelId::parse("gemini-2.5-pro").unwrap();
        assert_eq!(m.base(), BaseModel::Gemini25Pro);
        assert!(m.features().is_all_tools());
        assert_eq!(m.base().upstream_id(), "gemini-2.5-pro");
    }

    #[test]
    fn suffixes_in_any_order_and_combination() {
        let a = ModelId::parse("gemini-2.5-flash-image-search").unwrap();
        let b = ModelId::parse("gemini-2.5-flash-search-image").unwrap();
        assert_eq!(a.features(), b.features());
        assert_eq!(
            a.features(),
            Features {
                image: true,
                video: false,
                search: true
            }
        );
        let c = ModelId::parse("gemini-3-flash-preview-video-image-search").unwrap();
        assert_eq!(c.base(), BaseModel::Gemini3FlashPreview);
        assert_eq!(
            c.features(),
            Features {
                image: true,
                video: true,
                search: true
            }
        );
        // The response echoes the name as written.
        assert_eq!(b.public_name(), "gemini-2.5-flash-search-image");
    }

    #[test]
    fn gemini_prefix_is_accepted() {
        let m = ModelId::parse("models/gemini-3-pro-image").unwrap();
        assert_eq!(m.public_name(), "gemini-3-pro-image");
        assert!(m.features().image);
    }

    #[test]
    fn unknown_and_malformed_names_are_refused() {
        for bad in [
            "gpt-4o",
            "gemini-2.5-flash-image-image",
            "gemini-2.5-flashy",
            "gemini-image-2.5-flash",
            "-image",
            "gemini-2.5-flash-",
            "GEMINI-2.5-FLASH",
        ] {
            assert!(
                matches!(ModelId::parse(bad), Err(ModelError::Unknown(_))),
                "{bad}"
            );
        }
        assert_eq!(ModelId::parse(""), Err(ModelError::Missing));
        assert_eq!(ModelId::parse("  "), Err(ModelError::Missing));
    }

    #[test]
    fn listing_matches_the_reference_order() {
        let l = ModelId::listed();
        assert_eq!(l.len(), 28);
        assert_eq!(
            &l[..5],
            &[
                "gemini-2.5-flash",
                "gemini-2.5-pro",
                "gemini-3-pro-preview",
                "gemini-3-pro",
                "gemini-2.5-flash-image"
            ]
        );
        assert_eq!(l[16], "gemini-3-flash-preview");
        assert_eq!(l[27], "gemini-2.5-flash-preview-latest-search");
        for id in &l {
            assert!(ModelId::parse(id).is_ok(), "{id}");
        }
    }
}
