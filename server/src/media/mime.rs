//! Media types of client input: sniffing by magic bytes, and the set the upstream can take.
//!
//! One rule for every way media comes in (data URLs, base64 blocks, fetched URLs):
//!
//! - The label (a `Content-Type` header, a data URL's type, a block's `mime_type`) is taken as
//!   given when it is specific and the bytes do not contradict it.
//! - When the label is missing or generic (`application/octet-stream`, `text/plain`, …) or
//!   contradicts the bytes (a "JPEG" that starts with the PNG signature), the type sniffed from
//!   the magic bytes wins.
//! - Executables, archives and HTML are refused whatever the label says.
//! - The result must be in the accepted set: `image/*` (not SVG), `video/*`, `audio/*`,
//!   `application/pdf`, `application/json` and `text/*` (not HTML).

/// A MIME type's essence: lower case, without parameters or surrounding space.
pub fn essence(mime: &str) -> String {
    mime.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Labels that say nothing about the content.
fn is_generic(essence: &str) -> bool {
    matches!(
        essence,
        "" | "application/octet-stream"
            | "binary/octet-stream"
            | "application/binary"
            | "application/unknown"
            | "application/x-unknown"
            | "application/download"
            | "application/force-download"
            | "unknown/unknown"
            | "text/plain"
    )
}

/// Content the gateway refuses whatever label it carries.
fn is_dangerous(essence: &str) -> bool {
    matches!(
        essence,
        "application/x-msdownload"
            | "application/x-dosexec"
            | "application/x-executable"
            | "application/x-elf"
            | "application/x-mach-binary"
            | "application/x-sharedlib"
            | "application/x-sh"
            | "application/x-shellscript"
            | "application/java-archive"
            | "application/vnd.microsoft.portable-executable"
            | "application/zip"
            | "application/gzip"
            | "application/x-7z-compressed"
            | "application/x-rar-compressed"
            | "application/vnd.rar"
            | "application/x-tar"
            | "text/html"
            | "application/xhtml+xml"
            | "image/svg+xml"
            | "text/javascript"
            | "application/javascript"
    )
}

/// Whether the upstream takes this (already normalised) type as an input file.
pub fn is_accepted(essence: &str) -> bool {
    if is_dangerous(essence) {
        return false;
    }
    let Some((top, sub)) = essence.split_once('/') else {
        return false;
    };
    if sub.is_empty() {
        return false;
    }
    matches!(top, "image" | "video" | "audio" | "text")
        || matches!(essence, "application/pdf" | "application/json")
}

/// A short description of the accepted set, for error messages.
pub const ACCEPTED: &str = "images, video, audio, PDF, JSON and plain text";

/// The type the first bytes of a file announce, if they are a known signature.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let b = bytes;
    let starts = |sig: &[u8]| b.starts_with(sig);
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if starts(b"\xFF\xD8\xFF") {
        return Some("image/jpeg");
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Some("image/gif");
    }
    if b.len() >= 12 && starts(b"RIFF") {
        return match &b[8..12] {
            b"WEBP" => Some("image/webp"),
            b"WAVE" => Some("audio/wav"),
            b"AVI " => Some("video/x-msvideo"),
            _ => None,
        };
    }
    if starts(b"%PDF-") {
        return Some("application/pdf");
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        let brand = &b[8..12];
        return Some(match brand {
            b"qt  " => "video/quicktime",
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"mif1" | b"msf1" => "image/heic",
            b"avif" | b"avis" => "image/avif",
            b"M4A " | b"M4B " => "audio/mp4",
            _ if brand.starts_with(b"3g") => "video/3gpp",
            _ => "video/mp4",
        });
    }
    if starts(b"\x1A\x45\xDF\xA3") {
        let head = &b[..b.len().min(64)];
        let webm = head.windows(4).any(|w| w == b"webm");
        return Some(if webm {
            "video/webm"
        } else {
            "video/x-matroska"
        });
    }
    if starts(b"ID3") || (b.len() >= 2 && b[0] == 0xFF && matches!(b[1], 0xFB | 0xF3 | 0xF2)) {
        return Some("audio/mpeg");
    }
    if starts(b"OggS") {
        return Some("audio/ogg");
    }
    if starts(b"fLaC") {
        return Some("audio/flac");
    }
    if starts(b"II*\0") || starts(b"MM\0*") {
        return Some("image/tiff");
    }
    if starts(b"BM") && b.len() >= 14 && b[6..10] == [0, 0, 0, 0] {
        return Some("image/bmp");
    }
    if starts(b"MZ") {
        return Some("application/x-msdownload");
    }
    if starts(b"\x7FELF") {
        return Some("application/x-executable");
    }
    if starts(b"\xCF\xFA\xED\xFE") || starts(b"\xCE\xFA\xED\xFE") || starts(b"\xCA\xFE\xBA\xBE") {
        return Some("application/x-mach-binary");
    }
    if starts(b"#!") {
        return Some("application/x-sh");
    }
    if starts(b"PK\x03\x04") {
        return Some("application/zip");
    }
    if starts(b"\x1F\x8B") {
        return Some("application/gzip");
    }
    if looks_like_html(b) {
        return Some("text/html");
    }
    None
}

fn looks_like_html(b: &[u8]) -> bool {
    let head = &b[..b.len().min(512)];
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(head.len());
    let head = head[start..].to_ascii_lowercase();
    [
        &b"<!doctype html"[..],
        b"<html",
        b"<head",
        b"<body",
        b"<script",
        b"<iframe",
        b"<svg",
    ]
    .iter()
    .any(|tag| head.starts_with(tag))
}

/// Types that share a container: a label in the same family as the sniffed type is kept
/// (the signature cannot tell an `.m4v` from an `.mp4`, or WebM from Matroska reliably).
fn family(essence: &str) -> &str {
    match essence {
        "video/mp4" | "video/quicktime" | "audio/mp4" | "audio/x-m4a" | "audio/aac"
        | "video/3gpp" | "video/3gpp2" | "video/x-m4v" | "image/heic" | "image/heif"
        | "image/avif" => "iso-bmff",
        "video/webm" | "audio/webm" | "video/x-matroska" | "audio/x-matroska" => "matroska",
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "wav",
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpeg",
        "audio/mpeg" | "audio/mp3" | "audio/mpeg3" => "mp3",
        "audio/ogg" | "video/ogg" | "application/ogg" | "audio/opus" => "ogg",
        other => other,
    }
}

/// Why a media type was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The type that was refused (sniffed or labelled).
    pub mime: String,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.mime.is_empty() || self.mime == "application/octet-stream" {
            write!(
                f,
                "the media type could not be determined; supported: {ACCEPTED}"
            )
        } else {
            write!(
                f,
                "media of type {} is not supported; supported: {ACCEPTED}",
                self.mime
            )
        }
    }
}

/// The type to send upstream for `bytes` labelled `label` (see the module docs).
pub fn resolve(label: Option<&str>, bytes: &[u8]) -> Result<String, Unsupported> {
    let label = label.map(essence).unwrap_or_default();
    let sniffed = sniff(bytes);
    let chosen = match sniffed {
        Some(s) if is_dangerous(s) => s.to_owned(),
        Some(s) if is_generic(&label) => s.to_owned(),
        Some(s) if family(s) != family(&label) => s.to_owned(),
        Some(_) => label,
        None if label.is_empty() || (is_generic(&label) && label != "text/plain") => {
            "application/octet-stream".to_owned()
        }
        None => label,
    };
    if is_accepted(&chosen) {
        Ok(chosen)
    } else {
        Err(Unsupported { mime: chosen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn signatures() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (PNG, Some("image/png")),
            (b"\xFF\xD8\xFF\xE0\0\x10JFIF", Some("image/jpeg")),
            (b"GIF89a\x01\0", Some("image/gif")),
            (b"RIFF\x10\0\0\0WEBPVP8 ", Some("image/webp")),
            (b"RIFF\x10\0\0\0WAVEfmt ", Some("audio/wav")),
            (b"%PDF-1.7\n", Some("application/pdf")),
            (b"\0\0\0\x18ftypmp42\0\0\0\0", Some("video/mp4")),
            (b"\0\0\0\x14ftypqt  \0\0\0\0", Some("video/quicktime")),
            (b"\0\0\0\x18ftypheic\0\0\0\0", Some("image/heic")),
            (
                b"\x1A\x45\xDF\xA3\x9f\x42\x86\x81\x01\x42\x82\x84webm",
                Some("video/webm"),
            ),
            (b"ID3\x03\0\0\0", Some("audio/mpeg")),
            (b"\xFF\xFB\x90\x00", Some("audio/mpeg")),
            (b"OggS\0\x02", Some("audio/ogg")),
            (b"fLaC\0\0", Some("audio/flac")),
            (b"MZ\x90\0\x03\0", Some("application/x-msdownload")),
            (b"\x7FELF\x02\x01", Some("application/x-executable")),
            (b"PK\x03\x04\x14\0", Some("application/zip")),
            (b"  <!DOCTYPE html><html>", Some("text/html")),
            (b"\xEF\xBB\xBF<html><body>", Some("text/html")),
            (b"hello world", None),
            (b"", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(sniff(bytes), *want, "{bytes:?}");
        }
    }

    #[test]
    fn generic_or_missing_labels_take_the_sniffed_type() {
        assert_eq!(resolve(None, PNG).unwrap(), "image/png");
        assert_eq!(
            resolve(Some("application/octet-stream"), PNG).unwrap(),
            "image/png"
        );
        assert_eq!(
            resolve(Some("text/plain; charset=utf-8"), PNG).unwrap(),
            "image/png"
        );
    }

    #[test]
    fn a_lying_label_loses_to_the_bytes() {
        assert_eq!(resolve(Some("image/jpeg"), PNG).unwrap(), "image/png");
        assert_eq!(resolve(Some("video/mp4"), PNG).unwrap(), "image/png");
    }

    #[test]
    fn a_label_in_the_same_family_is_kept() {
        let mp4 = b"\0\0\0\x18ftypisom\0\0\0\0";
        assert_eq!(
            resolve(Some("video/quicktime"), mp4).unwrap(),
            "video/quicktime"
        );
        assert_eq!(
            resolve(Some("IMAGE/JPG"), b"\xFF\xD8\xFF\xE0").unwrap(),
            "image/jpg"
        );
    }

    #[test]
    fn specific_labels_without_a_signature_are_kept_if_accepted() {
        assert_eq!(resolve(Some("text/csv"), b"a,b\n1,2").unwrap(), "text/csv");
        assert_eq!(resolve(Some("text/plain"), b"hi").unwrap(), "text/plain");
        assert_eq!(
            resolve(Some("application/json"), b"{}").unwrap(),
            "application/json"
        );
        assert_eq!(
            resolve(Some("application/x-foo"), b"??").unwrap_err().mime,
            "application/x-foo"
        );
    }

    #[test]
    fn executables_html_and_unknown_bytes_are_refused() {
        for (label, bytes, refused) in [
            (
                Some("image/png"),
                &b"MZ\x90\0"[..],
                "application/x-msdownload",
            ),
            (None, &b"\x7FELF\x02"[..], "application/x-executable"),
            (Some("text/plain"), &b"<html><body>x"[..], "text/html"),
            (Some("text/html"), &b"<p>x"[..], "text/html"),
            (Some("image/svg+xml"), &b"<?xml"[..], "image/svg+xml"),
            (None, &b"\x00\x01\x02"[..], "application/octet-stream"),
            (
                Some("application/octet-stream"),
                &b"\x00\x01"[..],
                "application/octet-stream",
            ),
        ] {
            let e = resolve(label, bytes).unwrap_err();
            assert_eq!(e.mime, refused, "{label:?}");
            assert!(e.to_string().contains("supported:"), "{e}");
        }
    }

    #[test]
    fn accepted_set() {
        for ok in [
            "image/png",
            "video/mp4",
            "audio/mpeg",
            "application/pdf",
            "text/plain",
            "text/csv",
        ] {
            assert!(is_accepted(ok), "{ok}");
        }
        for no in [
            "application/x-msdownload",
            "text/html",
            "image/svg+xml",
            "application/zip",
            "application/octet-stream",
            "image",
            "image/",
        ] {
            assert!(!is_accepted(no), "{no}");
        }
    }
}
