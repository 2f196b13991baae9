//! Environment overrides (`LISTEN_ADDR`, `DATA_DIR`, `PROXY`, `CONFIG_ID`, `API_KEYS`, `API_KEY`,
//! `ADMIN_KEYS`, `ADMIN_KEY`), applied after the file — at start and again on every reload.

use std::path::PathBuf;

use super::Settings;
use super::proxy::ProxyUrl;
use super::reader::{Reader, dedup_secrets, parse_listen_addr, repeated_keys_warning, repeats};

/// Environment overrides, applied after the file. A variable set to the empty string counts as
/// unset (as in the reference, which tested `!= ""`).
pub(super) fn apply_env(
    settings: &mut Settings,
    env: &dyn Fn(&str) -> Option<String>,
    r: &mut Reader,
) {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());

    if let Some(v) = var("LISTEN_ADDR") {
        match parse_listen_addr(&v) {
            Ok(addr) => settings.listen_addr = addr,
            Err(e) => r.error("env LISTEN_ADDR", e),
        }
    }
    if let Some(v) = var("DATA_DIR") {
        settings.data_dir = PathBuf::from(v.trim());
    }
    if let Some(v) = var("PROXY") {
        match ProxyUrl::parse(&v) {
            Ok(p) => settings.proxy = Some(p),
            Err(e) => r.error("env PROXY", e),
        }
    }
    if let Some(v) = var("CONFIG_ID") {
        settings.default_config = v.trim().to_owned();
    }
    if let Some(v) = var("API_KEYS") {
        let keys: Vec<&str> = v.split(',').collect();
        match repeats(&keys) {
            0 => {}
            n => r.warn(repeated_keys_warning("env API_KEYS", n)),
        }
        settings.api_keys = dedup_secrets(keys.into_iter().map(str::to_owned));
    }
    if let Some(v) = var("ADMIN_KEYS") {
        settings.admin_keys = dedup_secrets(v.split(',').map(str::to_owned));
    }
    if let Some(v) = var("ADMIN_KEY") {
        let mut keys: Vec<String> = settings
            .admin_keys
            .iter()
            .map(|k| k.expose().to_owned())
            .collect();
        keys.push(v);
        settings.admin_keys = dedup_secrets(keys);
    }
    if let Some(v) = var("API_KEY") {
        let mut keys: Vec<String> = settings
            .api_keys
            .iter()
            .map(|k| k.expose().to_owned())
            .collect();
        if keys.iter().any(|k| k == v.trim()) {
            r.warn("env API_KEY is already one of the API keys; it adds nothing");
        }
        keys.push(v);
        settings.api_keys = dedup_secrets(keys);
    }
}

#[cfg(test)]
mod tests {
    use business2api_shared::Secret;

    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn env_overrides() {
        let file = r#"{"api_keys": ["file-key"], "listen_addr": ":1", "data_dir": "/file"}"#;
        let s = load_env(
            file,
            &[
                ("LISTEN_ADDR", ":8000"),
                ("DATA_DIR", "/app/data"),
                ("PROXY", "socks5h://u:p@proxy:1080"),
                ("CONFIG_ID", "cfg-123"),
                ("API_KEYS", " a , b,,a ,"),
                ("API_KEY", "c"),
            ],
        )
        .unwrap()
        .settings;
        assert_eq!(s.listen_addr, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("/app/data"));
        assert_eq!(s.proxy.unwrap().expose(), "socks5h://u:p@proxy:1080");
        assert_eq!(s.default_config, "cfg-123");
        let keys: Vec<&str> = s.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["a", "b", "c"], "API_KEYS replaces, API_KEY appends");

        // API_KEY alone appends to the file's keys (and a duplicate is dropped).
        let s = load_env(file, &[("API_KEY", " file-key ")])
            .unwrap()
            .settings;
        assert_eq!(s.api_keys.len(), 1);
        let s = load_env(file, &[("API_KEY", "env-key")]).unwrap().settings;
        let keys: Vec<&str> = s.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["file-key", "env-key"]);

        // Empty variables count as unset.
        let s = load_env(file, &[("API_KEYS", ""), ("DATA_DIR", "")])
            .unwrap()
            .settings;
        assert_eq!(s.api_keys.len(), 1);
        assert_eq!(s.data_dir, PathBuf::from("/file"));

        // Every env error is reported, with its variable's name; the proxy is not echoed.
        let e = load_env(
            "{}",
            &[("LISTEN_ADDR", "nope"), ("PROXY", "ftp://u:hunter2@x")],
        )
        .unwrap_err()
        .0;
        assert_eq!(paths(&e), ["env LISTEN_ADDR", "env PROXY"]);
        assert!(!e[1].message.contains("hunter2"));
    }
}
