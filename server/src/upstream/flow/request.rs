//! From a chat request to a Flow job (`../shared/spec/flow-upstream.md` §4): the prompt is the
//! text of the last user message that has some; the images are every inline image of the user
//! messages, in order. Checked against what the model takes before any token is used.

use bytes::Bytes;

use super::models::{FlowModel, VideoKind};
use crate::domain::{ChatRequest, Media, MediaKind, Role};
use crate::upstream::error::{ErrorKind, UpstreamError};

const ENDPOINT: &str = "flow.request";

/// What one Flow generation is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowJob {
    pub model: FlowModel,
    pub prompt: String,
    /// Images, in conversation order: references (images, R2V) or frames (I2V).
    pub images: Vec<Bytes>,
    /// What the client should hear about how its request was read (e.g. images not used).
    pub notices: Vec<String>,
}

fn refuse(message: impl Into<String>) -> UpstreamError {
    UpstreamError::new(ErrorKind::BadRequest, ENDPOINT, message)
}

/// The job `request` asks `model` for, or why it cannot be made.
pub fn job_from(request: &ChatRequest, model: FlowModel) -> Result<FlowJob, UpstreamError> {
    let users = || request.messages.iter().filter(|m| m.role == Role::User);
    let prompt = users()
        .rev()
        .map(crate::domain::Message::text)
        .find(|t| !t.trim().is_empty())
        .map(|t| t.trim().to_owned())
        .ok_or_else(|| refuse("the prompt is empty: Flow needs the user's text"))?;
    let mut images = Vec::new();
    for media in users().flat_map(crate::domain::Message::media) {
        match media {
            Media::Inline { mime, data } if MediaKind::from_mime(mime) == MediaKind::Image => {
                images.push(data.clone());
            }
            Media::Url { kind, .. } if *kind == MediaKind::Image => {
                return Err(refuse(
                    "Flow takes images inline (a data: URL or base64 block), not as links",
                ));
            }
            other => {
                return Err(refuse(format!(
                    "Flow takes only images as input, not {:?}",
                    other.kind()
                )));
            }
        }
    }
    let mut notices = Vec::new();
    match model {
        FlowModel::Video {
            kind: VideoKind::Text,
            ..
        } if !images.is_empty() => {
            notices.push(format!(
                "this text-to-video model does not use images; the {} sent were ignored",
                images.len()
            ));
            images.clear();
        }
        FlowModel::Video {
            kind: VideoKind::StartAndEnd,
            ..
        } if !(1..=2).contains(&images.len()) => {
            return Err(refuse(format!(
                "an image-to-video model takes one image (the first frame) or two (the first and \
                 the last frame); the request has {}",
                images.len()
            )));
        }
        _ => {}
    }
    Ok(FlowJob {
        model,
        prompt,
        images,
        notices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Message, Part};
    use crate::upstream::flow::models::model;

    fn image() -> Part {
        Part::Media(Media::Inline {
            mime: "image/png".into(),
            data: Bytes::from_static(b"\x89PNG"),
        })
    }

    fn request(messages: Vec<Message>) -> ChatRequest {
        let specs: Vec<std::sync::Arc<crate::domain::ModelSpec>> =
            crate::upstream::gemini_business::models::specs()
                .into_iter()
                .map(std::sync::Arc::new)
                .collect();
        let id = crate::domain::ModelId::parse_in(&specs, "gemini-2.5-flash").unwrap();
        ChatRequest::new(id, messages)
    }

    #[test]
    fn the_last_user_text_is_the_prompt_and_every_user_image_is_used() {
        let r = request(vec![
            Message::new(Role::System, vec![Part::Text("be creative".into())]),
            Message::new(Role::User, vec![Part::Text("a cat".into()), image()]),
            Message::new(Role::Assistant, vec![Part::Text("here".into())]),
            Message::new(Role::User, vec![image(), Part::Text("  a dog  ".into())]),
            Message::new(Role::User, vec![Part::Text("   ".into())]),
        ]);
        let job = job_from(&r, model("veo_3_0_r2v_fast_landscape").unwrap()).unwrap();
        assert_eq!(job.prompt, "a dog");
        assert_eq!(job.images.len(), 2);
        assert!(job.notices.is_empty());
    }

    #[test]
    fn each_kind_checks_its_images() {
        let with = |n: usize| {
            let mut parts = vec![Part::Text("go".into())];
            parts.extend((0..n).map(|_| image()));
            request(vec![Message::new(Role::User, parts)])
        };
        let i2v = model("veo_2_0_i2v_portrait").unwrap();
        assert_eq!(job_from(&with(1), i2v).unwrap().images.len(), 1);
        assert_eq!(job_from(&with(2), i2v).unwrap().images.len(), 2);
        for n in [0, 3] {
            let e = job_from(&with(n), i2v).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains(&format!("has {n}")), "{}", e.message);
        }
        let t2v = job_from(&with(2), model("veo_2_0_t2v_landscape").unwrap()).unwrap();
        assert!(t2v.images.is_empty());
        assert_eq!(t2v.notices.len(), 1);
        let r2v = model("veo_3_0_r2v_fast_portrait").unwrap();
        assert!(job_from(&with(0), r2v).unwrap().images.is_empty());
        let image_model = model("imagen-4.0-generate-preview-portrait").unwrap();
        assert_eq!(job_from(&with(3), image_model).unwrap().images.len(), 3);
    }

    #[test]
    fn what_flow_cannot_take_is_refused_before_any_call() {
        let empty = request(vec![Message::new(Role::User, vec![image()])]);
        let e = job_from(&empty, model("gemini-2.5-flash-image-landscape").unwrap()).unwrap_err();
        assert!(e.message.contains("prompt is empty"), "{}", e.message);
        let linked = request(vec![Message::new(
            Role::User,
            vec![
                Part::Text("x".into()),
                Part::Media(Media::Url {
                    url: "https://example.com/a.png".into(),
                    kind: MediaKind::Image,
                }),
            ],
        )]);
        let e = job_from(&linked, model("gemini-2.5-flash-image-landscape").unwrap()).unwrap_err();
        assert!(e.message.contains("inline"), "{}", e.message);
        let audio = request(vec![Message::new(
            Role::User,
            vec![
                Part::Text("x".into()),
                Part::Media(Media::Inline {
                    mime: "audio/mpeg".into(),
                    data: Bytes::from_static(b"ID3"),
                }),
            ],
        )]);
        assert!(job_from(&audio, model("veo_3_0_r2v_fast_portrait").unwrap()).is_err());
    }
}
