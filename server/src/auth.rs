//! API keys: which keys the gateway accepts, where a request may carry one, and the key
//! generated on first start when none is configured.
//!
//! No configured key never means an open gateway: on first start without keys a key is
//! generated, written to `<data_dir>/api_key` (mode 0600) and printed once. Only
//! `"allow_unauthenticated": true` serves the API without keys.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use actix_web::HttpRequest;
use actix_web::http::header;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use business2api_shared::Secret;
use business2api_shared::secret::matches_any;
use rand::RngCore as _;

use crate::config::live::LiveConfig;
use crate::error::GatewayError;

/// The file the generated key is stored in, inside the data dir.
pub const GENERATED_KEY_FILE: &str = "api_key";

/// Which requests may use the API.
#[derive(Debug, Clone)]
pub enum ApiKeys {
    /// Only requests carrying one of these keys.
    Required(Vec<Secret>),
    /// Everyone (`allow_unauthenticated: true` and no keys configured).
    Open,
}

/// How the key set was decided at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Configured,
    /// A key generated on an earlier start, read from this file.
    StoredGenerated(PathBuf),
    /// A key generated now; it must be shown to the operator once.
    NewlyGenerated(PathBuf, Secret),
    Unauthenticated,
}

/// Decides the key set: configured keys win; else `allow_unauthenticated`; else the generated
/// key (created on first start).
pub fn resolve(
    configured: &[Secret],
    allow_unauthenticated: bool,
    data_dir: &Path,
) -> std::io::Result<(ApiKeys, KeySource)> {
    if !configured.is_empty() {
        return Ok((
            ApiKeys::Required(configured.to_vec()),
            KeySource::Configured,
        ));
    }
    if allow_unauthenticated {
        return Ok((ApiKeys::Open, KeySource::Unauthenticated));
    }
    let path = data_dir.join(GENERATED_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            let key = Secret::new(text.trim());
            return Ok((
                ApiKeys::Required(vec![key]),
                KeySource::StoredGenerated(path),
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = generate_key();
    write_secret_file(&path, key.expose())?;
    Ok((
        ApiKeys::Required(vec![key.clone()]),
        KeySource::NewlyGenerated(path, key),
    ))
}

/// A new random key: `sk-b2a-` and 32 random bytes, base64url.
pub fn generate_key() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(format!("sk-b2a-{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Writes a file readable by its owner only, atomically (temp file + rename).
pub(crate) fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The files in the data dir that hold secrets the gateway reads: the generated API key, the
/// thinking-signing key and the admin password hash.
pub fn secret_files(data_dir: &Path) -> [PathBuf; 3] {
    [
        data_dir.join(GENERATED_KEY_FILE),
        data_dir.join(crate::dialects::anthropic::signature::KEY_FILE),
        crate::admin::panel::password::path(data_dir),
    ]
}

/// Makes every existing [`secret_files`] file readable by its owner only: a file that group or
/// others may access (`mode & 0o077 != 0`) is changed to mode 0600. Returns a warning for each
/// file changed, or that could not be changed. Run at start and on every reload.
pub fn tighten_secret_files(data_dir: &Path) -> Vec<String> {
    secret_files(data_dir)
        .iter()
        .filter_map(|path| tighten_secret_file(path))
        .collect()
}

#[cfg(unix)]
fn tighten_secret_file(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return None;
    }
    Some(
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => format!(
                "{} was readable by group or others (mode {mode:04o}); it holds a secret, so \
                 its mode is now 0600",
                path.display()
            ),
            Err(e) => format!(
                "{} is readable by group or others (mode {mode:04o}) and its mode could not be \
                 changed ({e}); it holds a secret: run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
        },
    )
}

#[cfg(not(unix))]
fn tighten_secret_file(_: &Path) -> Option<String> {
    None
}

/// The key a request carries, from (in this order) `Authorization: Bearer`, `x-api-key`,
/// `x-goog-api-key` or the `key` query parameter.
pub fn presented_key(req: &HttpRequest) -> Option<String> {
    let headers = req.headers();
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some((scheme, token)) = v.split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
            && !token.trim().is_empty()
        {
            return Some(token.trim().to_owned());
        }
    }
    for name in ["x-api-key", "x-goog-api-key"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok())
            && !v.trim().is_empty()
        {
            return Some(v.trim().to_owned());
        }
    }
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, v)| k == "key" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// Whether the request carries one of `keys` (compared in constant time).
fn check_keys(keys: &[Secret], req: &HttpRequest) -> Result<(), GatewayError> {
    let presented = presented_key(req).ok_or(GatewayError::MissingApiKey)?;
    if matches_any(keys, presented.as_bytes()) {
        Ok(())
    } else {
        Err(GatewayError::InvalidApiKey)
    }
}

impl ApiKeys {
    /// Whether the request may use the API. Keys are compared in constant time.
    pub fn check(&self, req: &HttpRequest) -> Result<(), GatewayError> {
        match self {
            ApiKeys::Open => Ok(()),
            ApiKeys::Required(keys) => check_keys(keys, req),
        }
    }
}

/// The API-key check of the running gateway: reads `api_keys` and `allow_unauthenticated` from
/// the live configuration at every request, so a reload takes effect at once. Without
/// configured keys the generated key (`<data_dir>/api_key`) applies; it is resolved at start
/// and, if a reload removes every configured key, before that reload is swapped in (see
/// [`ApiKeyGate::prepare`]), so the check never runs open by accident.
#[derive(Debug, Clone)]
pub struct ApiKeyGate {
    live: LiveConfig,
    data_dir: PathBuf,
    /// The generated key, once one was needed (it never changes while the process runs: the
    /// data dir needs a restart).
    generated: Arc<OnceLock<Secret>>,
}

impl ApiKeyGate {
    /// Resolves the key set of `live`'s current settings (generating the key on first start
    /// when none is configured) and returns the gate and how the keys were decided.
    pub fn start(live: LiveConfig, data_dir: &Path) -> std::io::Result<(ApiKeyGate, KeySource)> {
        let gate = ApiKeyGate {
            live,
            data_dir: data_dir.to_path_buf(),
            generated: Arc::new(OnceLock::new()),
        };
        let settings = gate.live.load();
        let source = gate.prepare(&settings.api_keys, settings.allow_unauthenticated)?;
        Ok((gate, source))
    }

    /// Makes sure the generated key is known when `configured` is empty and unauthenticated
    /// use is not allowed (reads or creates `<data_dir>/api_key`). Call before swapping in
    /// settings with these keys.
    pub fn prepare(
        &self,
        configured: &[Secret],
        allow_unauthenticated: bool,
    ) -> std::io::Result<KeySource> {
        if configured.is_empty() && !allow_unauthenticated && self.generated.get().is_some() {
            // The generated key of this process stays the one that is checked: never generate
            // or read another one (the file may have been deleted since start).
            return Ok(KeySource::StoredGenerated(
                self.data_dir.join(GENERATED_KEY_FILE),
            ));
        }
        let (keys, source) = resolve(configured, allow_unauthenticated, &self.data_dir)?;
        if let (KeySource::StoredGenerated(_) | KeySource::NewlyGenerated(..), ApiKeys::Required(k)) =
            (&source, keys)
            && let Some(key) = k.into_iter().next()
        {
            let _ = self.generated.set(key);
        }
        Ok(source)
    }

    /// The refusal when the generated key would be the API key under `api_keys` /
    /// `allow_unauthenticated` and one of `admin_keys` equals it: like a configured API key
    /// listed as an admin key, the generated key must never grant the admin routes. Call after
    /// [`ApiKeyGate::prepare`]. The message names the file, never the key.
    pub fn admin_key_conflict(
        &self,
        api_keys: &[Secret],
        allow_unauthenticated: bool,
        admin_keys: &[Secret],
    ) -> Option<String> {
        if !api_keys.is_empty() || allow_unauthenticated {
            return None;
        }
        let generated = self.generated.get()?;
        matches_any(admin_keys, generated.expose().as_bytes()).then(|| {
            format!(
                "an admin key equals the generated API key stored in {}; admin and API keys \
                 must differ (an API key must never grant the admin routes): configure another \
                 admin key",
                self.data_dir.join(GENERATED_KEY_FILE).display()
            )
        })
    }

    /// The generated API key, once one was needed (for redacting it from served log lines).
    pub fn generated(&self) -> Option<&Secret> {
        self.generated.get()
    }

    /// Whether the request may use the API, by the configuration in force now.
    pub fn check(&self, req: &HttpRequest) -> Result<(), GatewayError> {
        self.caller(req).map(|_| ())
    }

    /// Who the request is by its configured key ([`crate::keys::Caller::Configured`], labelled
    /// by a hash of the key), or [`crate::keys::Caller::Open`] when no key is needed.
    pub fn caller(&self, req: &HttpRequest) -> Result<crate::keys::Caller, GatewayError> {
        use crate::keys::{Caller, configured_label};
        let settings = self.live.load();
        let keys: &[Secret] = if !settings.api_keys.is_empty() {
            &settings.api_keys
        } else if settings.allow_unauthenticated {
            return Ok(Caller::Open);
        } else {
            match self.generated.get() {
                Some(key) => std::slice::from_ref(key),
                // `prepare` runs before any settings without keys are swapped in; fail closed.
                None => return Err(GatewayError::InvalidApiKey),
            }
        };
        check_keys(keys, req)?;
        Ok(Caller::Configured(configured_label(
            &presented_key(req).unwrap_or_default(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn keys_are_found_in_every_documented_place() {
        let keys = ApiKeys::Required(vec![Secret::new("k1")]);
        for req in [
            TestRequest::default().insert_header(("authorization", "Bearer k1")),
            TestRequest::default().insert_header(("authorization", "bearer  k1 ")),
            TestRequest::default().insert_header(("x-api-key", "k1")),
            TestRequest::default().insert_header(("x-goog-api-key", "k1")),
            TestRequest::with_uri("/v1beta/models?alt=sse&key=k1"),
        ] {
            assert_eq!(keys.check(&req.to_http_request()), Ok(()));
        }
        let wrong = TestRequest::default()
            .insert_header(("x-api-key", "k2"))
            .to_http_request();
        assert_eq!(keys.check(&wrong), Err(GatewayError::InvalidApiKey));
        let none = TestRequest::default()
            .insert_header(("authorization", "Basic k1"))
            .to_http_request();
        assert_eq!(keys.check(&none), Err(GatewayError::MissingApiKey));
        assert_eq!(ApiKeys::Open.check(&none), Ok(()));
    }

    #[test]
    fn first_start_generates_a_private_key_and_later_starts_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, source) = resolve(&[], false, dir.path()).unwrap();
        let KeySource::NewlyGenerated(path, key) = source else {
            panic!("{source:?}")
        };
        assert!(key.expose().starts_with("sk-b2a-") && key.expose().len() > 40);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let ApiKeys::Required(k) = keys else { panic!() };
        assert_eq!(k, vec![key.clone()]);
        let (again, source) = resolve(&[], false, dir.path()).unwrap();
        assert_eq!(source, KeySource::StoredGenerated(path));
        let ApiKeys::Required(k) = again else {
            panic!()
        };
        assert_eq!(k, vec![key]);
    }

    #[test]
    fn configured_keys_win_and_open_needs_the_explicit_flag() {
        let dir = tempfile::tempdir().unwrap();
        let (_, s) = resolve(&[Secret::new("x")], true, dir.path()).unwrap();
        assert_eq!(s, KeySource::Configured);
        let (k, s) = resolve(&[], true, dir.path()).unwrap();
        assert!(matches!(k, ApiKeys::Open));
        assert_eq!(s, KeySource::Unauthenticated);
        assert!(!dir.path().join(GENERATED_KEY_FILE).exists());
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_readable_by_others_are_made_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let [api_key, signing, _] = secret_files(dir.path());
        assert!(tighten_secret_files(dir.path()).is_empty(), "missing files");
        std::fs::write(&api_key, "sk-b2a-SECRET\n").unwrap();
        std::fs::write(&signing, [7u8; 32]).unwrap();
        std::fs::set_permissions(&api_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&signing, std::fs::Permissions::from_mode(0o600)).unwrap();
        let warnings = tighten_secret_files(dir.path());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("mode 0644") && warnings[0].contains("now 0600"));
        assert!(!warnings[0].contains("SECRET"));
        for path in [&api_key, &signing] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(
            tighten_secret_files(dir.path()).is_empty(),
            "once is enough"
        );
    }

    #[test]
    fn an_admin_key_equal_to_the_generated_key_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let live = LiveConfig::new(crate::config::Settings::defaults());
        let (gate, source) = ApiKeyGate::start(live, dir.path()).unwrap();
        let KeySource::NewlyGenerated(_, key) = source else {
            panic!("{source:?}")
        };
        let admin = [Secret::new("another-admin-key-0123"), key.clone()];
        let message = gate.admin_key_conflict(&[], false, &admin).unwrap();
        assert!(message.contains("api_key") && !message.contains(key.expose()));
        // Not in use: configured API keys, or the open gateway.
        assert!(
            gate.admin_key_conflict(&[Secret::new("k")], false, &admin)
                .is_none()
        );
        assert!(gate.admin_key_conflict(&[], true, &admin).is_none());
        assert!(gate.admin_key_conflict(&[], false, &admin[..1]).is_none());
    }

    #[test]
    fn the_generated_key_of_a_running_gate_never_changes() {
        let dir = tempfile::tempdir().unwrap();
        let live = LiveConfig::new(crate::config::Settings::defaults());
        let (gate, source) = ApiKeyGate::start(live, dir.path()).unwrap();
        let KeySource::NewlyGenerated(path, key) = source else {
            panic!("{source:?}")
        };
        // The operator deletes the key file; a reload that keeps "no keys" must not create a
        // second key that the gate would not check.
        std::fs::remove_file(&path).unwrap();
        gate.prepare(&[], false).unwrap();
        assert!(!path.exists(), "no new key file was written");
        let with = |k: &str| {
            TestRequest::default()
                .insert_header(("authorization", format!("Bearer {k}")))
                .to_http_request()
        };
        assert!(gate.check(&with(key.expose())).is_ok());
        assert!(gate.check(&with("sk-other")).is_err());
    }
}
