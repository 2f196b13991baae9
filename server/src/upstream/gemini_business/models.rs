//! The models Gemini Business serves: public base name → `assistGenerationConfig.modelId`, and
//! the order `/v1/models` lists them in (the reference's 28 ids).
//!
//! Every base model is sent upstream with its id; the reference sent no id for the last three
//! and silently got the workspace default. If the upstream does not know an id it answers 400,
//! which reaches the client as a clear error. Every base name takes the `-image`, `-video` and
//! `-search` suffixes (see `toolsSpec` in [`super::convert`]).

use crate::domain::{Features, ModelSpec};

/// `(public base name, upstream modelId)`, in listing order.
const BASE_MODELS: [(&str, &str); 7] = [
    ("gemini-2.5-flash", "gemini-2.5-flash"),
    ("gemini-2.5-pro", "gemini-2.5-pro"),
    ("gemini-3-pro-preview", "gemini-3-pro-preview"),
    ("gemini-3-pro", "gemini-3-pro"),
    ("gemini-3-flash-preview", "gemini-3-flash-preview"),
    ("gemini-3-flash", "gemini-3-flash"),
    (
        "gemini-2.5-flash-preview-latest",
        "gemini-2.5-flash-preview-latest",
    ),
];

/// The specs to register.
pub fn specs() -> Vec<ModelSpec> {
    BASE_MODELS
        .iter()
        .map(|(name, id)| ModelSpec {
            name: (*name).to_owned(),
            upstream: super::NAME,
            upstream_id: (*id).to_owned(),
            suffixes: true,
            features: Features::default(),
            visible: true,
        })
        .collect()
}

/// The ids `/v1/models` lists: each base model plain, then with `-image`, `-video` and
/// `-search`, in the reference's order (the first four base models grouped by suffix, then the
/// rest per base).
pub fn listing() -> Vec<String> {
    let mut out = Vec::with_capacity(BASE_MODELS.len() * 4);
    let (grouped, per_base) = BASE_MODELS.split_at(4);
    for suffix in ["", "-image", "-video", "-search"] {
        for (base, _) in grouped {
            out.push(format!("{base}{suffix}"));
        }
    }
    for (base, _) in per_base {
        for suffix in ["", "-image", "-video", "-search"] {
            out.push(format!("{base}{suffix}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::{ModelError, ModelId};

    fn parse(name: &str) -> Result<ModelId, ModelError> {
        let specs: Vec<Arc<ModelSpec>> = specs().into_iter().map(Arc::new).collect();
        ModelId::parse_in(&specs, name)
    }

    #[test]
    fn plain_model_means_all_tools() {
        let m = parse("gemini-2.5-pro").unwrap();
        assert!(m.features().is_all_tools());
        assert_eq!(m.upstream_id(), "gemini-2.5-pro");
        assert_eq!(m.upstream(), super::super::NAME);
    }

    #[test]
    fn suffixes_in_any_order_and_combination() {
        let a = parse("gemini-2.5-flash-image-search").unwrap();
        let b = parse("gemini-2.5-flash-search-image").unwrap();
        assert_eq!(a.features(), b.features());
        assert_eq!(
            a.features(),
            Features {
                image: true,
                video: false,
                search: true
            }
        );
        let c = parse("gemini-3-flash-preview-video-image-search").unwrap();
        assert_eq!(c.upstream_id(), "gemini-3-flash-preview");
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
        let m = parse("models/gemini-3-pro-image").unwrap();
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
            assert!(matches!(parse(bad), Err(ModelError::Unknown(_))), "{bad}");
        }
        assert_eq!(parse(""), Err(ModelError::Missing));
        assert_eq!(parse("  "), Err(ModelError::Missing));
    }

    #[test]
    fn listing_matches_the_reference_order() {
        let l = listing();
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
            assert!(parse(id).is_ok(), "{id}");
        }
    }
}
