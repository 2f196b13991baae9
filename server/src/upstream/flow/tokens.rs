//! Where Flow session tokens come from (`../shared/spec/flow-upstream.md` §1): `flow.tokens` in
//! the configuration (ids `flow_token_<i>`, in order) and the files of `<data_dir>/at/` (a cookie
//! string each; id = the lowercase hex MD5 of the session token, as the reference named them).
//! Tokens are [`Secret`]s from the moment they are read; ids and sources are safe to log.

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use business2api_shared::Secret;

/// The session cookie's name in a cookie string.
const COOKIE: &str = "__Secure-next-auth.session-token=";
/// A file without `=` is taken whole only when it is this long (a bare token), as the reference.
const BARE_TOKEN_MIN: usize = 100;
/// The largest token file read (a cookie string is a few KiB).
const MAX_FILE: u64 = 64 * 1024;

/// Where a token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `flow.tokens[index]`.
    Config { index: usize },
    /// A file in `<data_dir>/at/`.
    File(PathBuf),
}

/// One session token, with its id.
#[derive(Debug, Clone)]
pub struct FlowToken {
    /// `flow_token_<i>` for configuration tokens, else the MD5 of the token.
    pub id: String,
    pub source: TokenSource,
    pub session: Secret,
}

/// A token file that could not be used, and why (never the file's content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    pub path: PathBuf,
    pub reason: String,
}

/// The lowercase hex MD5 of a session token: the id of file and API tokens.
pub fn token_id(session: &Secret) -> String {
    let digest = Md5::digest(session.expose().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session token in a cookie string (`__Secure-next-auth.session-token=` up to `;` or
/// whitespace), or the whole text when it holds no `=` and is long enough to be a bare token.
pub fn session_from_cookie_text(text: &str) -> Option<Secret> {
    let text = text.trim();
    if let Some(at) = text.find(COOKIE) {
        let value: String = text[at + COOKIE.len()..]
            .chars()
            .take_while(|c| *c != ';' && !c.is_whitespace())
            .collect();
        return (!value.is_empty()).then(|| Secret::new(value));
    }
    (!text.contains('=') && text.len() > BARE_TOKEN_MIN && !text.contains(char::is_whitespace))
        .then(|| Secret::new(text.to_owned()))
}

/// The configuration's tokens, in order.
pub fn config_tokens(tokens: &[Secret]) -> Vec<FlowToken> {
    tokens
        .iter()
        .enumerate()
        .map(|(index, session)| FlowToken {
            id: format!("flow_token_{index}"),
            source: TokenSource::Config { index },
            session: session.clone(),
        })
        .collect()
}

/// The token held by one file of `<data_dir>/at/`.
pub fn file_token(path: &Path) -> Result<FlowToken, Unusable> {
    let unusable = |reason: String| Unusable {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| unusable(format!("cannot be read ({e})")))?;
    if !meta.is_file() {
        return Err(unusable("is not a file".to_owned()));
    }
    if meta.len() > MAX_FILE {
        return Err(unusable(format!("is larger than {MAX_FILE} bytes")));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| unusable(format!("cannot be read as text ({e})")))?;
    let session = session_from_cookie_text(&text).ok_or_else(|| {
        unusable("holds no __Secure-next-auth.session-token cookie (nor a bare token)".to_owned())
    })?;
    Ok(FlowToken {
        id: token_id(&session),
        source: TokenSource::File(path.to_owned()),
        session,
    })
}

/// Every token file of `dir` (sorted by name; hidden files and directories skipped), and the
/// files that could not be used. A missing directory holds none.
pub fn dir_tokens(dir: &Path) -> (Vec<FlowToken>, Vec<Unusable>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (Vec::new(), Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    paths.sort();
    let (mut tokens, mut unusable) = (Vec::new(), Vec::new());
    for path in paths {
        match file_token(&path) {
            // The same token in two files is one token.
            Ok(t) if tokens.iter().any(|k: &FlowToken| k.id == t.id) => {}
            Ok(t) => tokens.push(t),
            Err(u) => unusable.push(u),
        }
    }
    (tokens, unusable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_token() -> String {
        "A1b2C3d4.".repeat(15)
    }

    #[test]
    fn the_session_token_is_found_in_a_cookie_string_or_taken_bare() {
        let cookie = format!(
            "foo=1; __Secure-next-auth.session-token={}; bar=2",
            long_token()
        );
        assert_eq!(
            session_from_cookie_text(&cookie).unwrap().expose(),
            long_token()
        );
        let ended_by_space = "__Secure-next-auth.session-token=abc def";
        assert_eq!(
            session_from_cookie_text(ended_by_space).unwrap().expose(),
            "abc"
        );
        // A bare token: no '=', long enough, surrounding whitespace trimmed.
        let bare = format!("\n  {}\n", long_token());
        assert_eq!(
            session_from_cookie_text(&bare).unwrap().expose(),
            long_token()
        );
        for nothing in [
            "",
            "short-token",
            "other=cookie; x=y",
            "__Secure-next-auth.session-token=",
            "__Secure-next-auth.session-token=;rest",
        ] {
            assert!(session_from_cookie_text(nothing).is_none(), "{nothing:?}");
        }
    }

    #[test]
    fn ids_follow_the_reference() {
        // md5("abc"), the RFC 1321 test vector.
        assert_eq!(
            token_id(&Secret::new("abc".to_owned())),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        let config = config_tokens(&[Secret::new("a"), Secret::new("b")]);
        assert_eq!(
            config.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["flow_token_0", "flow_token_1"]
        );
        assert_eq!(config[1].source, TokenSource::Config { index: 1 });
    }

    #[test]
    fn a_directory_gives_its_tokens_and_names_its_unusable_files() {
        let dir = tempfile::tempdir().unwrap();
        let st = long_token();
        std::fs::write(
            dir.path().join("b.txt"),
            format!("__Secure-next-auth.session-token={st}; other=x"),
        )
        .unwrap();
        // The same token again, bare: one token.
        std::fs::write(dir.path().join("c.txt"), &st).unwrap();
        std::fs::write(dir.path().join("a.txt"), "no cookie here").unwrap();
        std::fs::write(dir.path().join(".hidden"), &st).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let (tokens, unusable) = dir_tokens(dir.path());
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].id, token_id(&Secret::new(st.clone())));
        assert_eq!(
            tokens[0].source,
            TokenSource::File(dir.path().join("b.txt"))
        );
        assert_eq!(unusable.len(), 1);
        assert_eq!(unusable[0].path, dir.path().join("a.txt"));
        // Nothing of a token in what may be logged.
        let shown = format!("{tokens:?} {unusable:?}");
        assert!(!shown.contains(&st), "{shown}");
        assert!(dir_tokens(&dir.path().join("missing")).0.is_empty());
    }
}
