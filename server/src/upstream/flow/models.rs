//! The Flow model ids (`../shared/spec/flow-upstream.md` §2): what each public id asks Flow for.

/// Landscape or portrait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    Landscape,
    Portrait,
}

impl Orientation {
    /// `IMAGE_ASPECT_RATIO_*`.
    pub fn image_aspect(self) -> &'static str {
        match self {
            Orientation::Landscape => "IMAGE_ASPECT_RATIO_LANDSCAPE",
            Orientation::Portrait => "IMAGE_ASPECT_RATIO_PORTRAIT",
        }
    }

    /// `VIDEO_ASPECT_RATIO_*`.
    pub fn video_aspect(self) -> &'static str {
        match self {
            Orientation::Landscape => "VIDEO_ASPECT_RATIO_LANDSCAPE",
            Orientation::Portrait => "VIDEO_ASPECT_RATIO_PORTRAIT",
        }
    }
}

/// How a video is made from the request's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoKind {
    /// Text to video: images are not used.
    Text,
    /// One or two images: the start frame and, optionally, the end frame.
    StartAndEnd,
    /// Any number of reference images, none included.
    Reference,
}

/// What a Flow model id generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowModel {
    Image {
        /// `imageModelName`.
        model_name: &'static str,
        orientation: Orientation,
    },
    Video {
        /// `videoModelKey`.
        model_key: &'static str,
        kind: VideoKind,
        orientation: Orientation,
    },
}

/// Every public Flow model id with what it asks for.
pub const MODELS: [(&str, FlowModel); 20] = {
    use FlowModel::{Image, Video};
    use Orientation::{Landscape, Portrait};
    use VideoKind::{Reference, StartAndEnd, Text};
    [
        (
            "gemini-2.5-flash-image-landscape",
            Image {
                model_name: "GEM_PIX",
                orientation: Landscape,
            },
        ),
        (
            "gemini-2.5-flash-image-portrait",
            Image {
                model_name: "GEM_PIX",
                orientation: Portrait,
            },
        ),
        (
            "gemini-3.0-pro-image-landscape",
            Image {
                model_name: "GEM_PIX_2",
                orientation: Landscape,
            },
        ),
        (
            "gemini-3.0-pro-image-portrait",
            Image {
                model_name: "GEM_PIX_2",
                orientation: Portrait,
            },
        ),
        (
            "imagen-4.0-generate-preview-landscape",
            Image {
                model_name: "IMAGEN_3_5",
                orientation: Landscape,
            },
        ),
        (
            "imagen-4.0-generate-preview-portrait",
            Image {
                model_name: "IMAGEN_3_5",
                orientation: Portrait,
            },
        ),
        // The portrait key of Veo 3.1 fast keeps its suffix (sic, as Flow names it).
        (
            "veo_3_1_t2v_fast_portrait",
            Video {
                model_key: "veo_3_1_t2v_fast_portrait",
                kind: Text,
                orientation: Portrait,
            },
        ),
        (
            "veo_3_1_t2v_fast_landscape",
            Video {
                model_key: "veo_3_1_t2v_fast",
                kind: Text,
                orientation: Landscape,
            },
        ),
        (
            "veo_2_1_fast_d_15_t2v_portrait",
            Video {
                model_key: "veo_2_1_fast_d_15_t2v",
                kind: Text,
                orientation: Portrait,
            },
        ),
        (
            "veo_2_1_fast_d_15_t2v_landscape",
            Video {
                model_key: "veo_2_1_fast_d_15_t2v",
                kind: Text,
                orientation: Landscape,
            },
        ),
        (
            "veo_2_0_t2v_portrait",
            Video {
                model_key: "veo_2_0_t2v",
                kind: Text,
                orientation: Portrait,
            },
        ),
        (
            "veo_2_0_t2v_landscape",
            Video {
                model_key: "veo_2_0_t2v",
                kind: Text,
                orientation: Landscape,
            },
        ),
        (
            "veo_3_1_i2v_s_fast_fl_portrait",
            Video {
                model_key: "veo_3_1_i2v_s_fast_fl",
                kind: StartAndEnd,
                orientation: Portrait,
            },
        ),
        (
            "veo_3_1_i2v_s_fast_fl_landscape",
            Video {
                model_key: "veo_3_1_i2v_s_fast_fl",
                kind: StartAndEnd,
                orientation: Landscape,
            },
        ),
        (
            "veo_2_1_fast_d_15_i2v_portrait",
            Video {
                model_key: "veo_2_1_fast_d_15_i2v",
                kind: StartAndEnd,
                orientation: Portrait,
            },
        ),
        (
            "veo_2_1_fast_d_15_i2v_landscape",
            Video {
                model_key: "veo_2_1_fast_d_15_i2v",
                kind: StartAndEnd,
                orientation: Landscape,
            },
        ),
        (
            "veo_2_0_i2v_portrait",
            Video {
                model_key: "veo_2_0_i2v",
                kind: StartAndEnd,
                orientation: Portrait,
            },
        ),
        (
            "veo_2_0_i2v_landscape",
            Video {
                model_key: "veo_2_0_i2v",
                kind: StartAndEnd,
                orientation: Landscape,
            },
        ),
        (
            "veo_3_0_r2v_fast_portrait",
            Video {
                model_key: "veo_3_0_r2v_fast",
                kind: Reference,
                orientation: Portrait,
            },
        ),
        (
            "veo_3_0_r2v_fast_landscape",
            Video {
                model_key: "veo_3_0_r2v_fast",
                kind: Reference,
                orientation: Landscape,
            },
        ),
    ]
};

/// What the Flow model `id` asks for, if it is one.
pub fn model(id: &str) -> Option<FlowModel> {
    MODELS.iter().find(|(name, _)| *name == id).map(|(_, m)| *m)
}

/// The name Flow registers its models under.
pub const UPSTREAM: &str = "flow";

/// Every Flow model as the registry knows it: the public id is Flow's own id, with no feature
/// suffixes; image models have the `image` feature, video models `video`.
pub fn specs() -> Vec<crate::domain::ModelSpec> {
    MODELS
        .iter()
        .map(|(name, model)| crate::domain::ModelSpec {
            name: (*name).to_owned(),
            upstream: UPSTREAM,
            upstream_id: (*name).to_owned(),
            suffixes: false,
            features: crate::domain::Features {
                image: matches!(model, FlowModel::Image { .. }),
                video: matches!(model, FlowModel::Video { .. }),
                search: false,
            },
            visible: true,
        })
        .collect()
}
