//! Lossless import and export of account files in the reference format (spec §2.1).
//!
//! Export writes each account exactly as the reference Go gateway writes it
//! (`json.MarshalIndent(acc, "", "  ")`: its key order, its two-space layout, its string
//! escaping, no trailing newline), so a file the reference wrote comes back byte for byte. Keys
//! the reference does not know are kept on import and written after the known ones.
//!
//! Import takes a file holding one account object or a JSON array of them, or a directory of
//! such files; it is idempotent (accounts are keyed by e-mail).
//!
//! Everything here blocks on disk I/O: call it from `spawn_blocking` or a command-line tool.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::accounts::Incoming;
use crate::pool::import::{
    ImportReport, KNOWN_KEYS, Rejected, json_files_in, parse_account_object,
};
use crate::store::{AccountRecord, Store, StoreError};

/// The directory, inside the data dir, that retired account files move to.
pub const EXPIRED_DIR: &str = "expired";

/// Longest stem (the part before `.json`) [`file_name_for`] produces, in bytes.
const MAX_STEM: usize = 200;

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to write {path}: it would not be directly inside {dir}")]
    OutsideDir { path: PathBuf, dir: PathBuf },
}

/// What an export did.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    /// Each exported account's e-mail and the file written for it.
    pub written: Vec<(String, PathBuf)>,
    /// Stored records that cannot be read, by key, with the reason; they were not exported.
    pub skipped: Vec<Rejected>,
}

// ---------------------------------------------------------------------------------------------
// Writing JSON as Go's encoding/json does.

/// A JSON value whose object keys keep the order they are given in.
enum Node<'a> {
    Str(&'a str),
    Json(&'a Value),
    Object(Vec<(&'a str, Node<'a>)>),
    Array(Vec<Node<'a>>),
}

/// Appends `s` as a JSON string escaped as Go's encoding/json does by default (Go 1.22 and
/// later, with HTML escaping): `"` and `\` escaped; `\b`, `\f`, `\n`, `\r`, `\t` by name; other
/// C0 controls and `<`, `>`, `&` as `\u00xx` (lower-case hex); U+2028 and U+2029 as `\u2028` and
/// `\u2029`; everything else, including other non-ASCII text, as UTF-8.
fn push_go_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut buf = [0u8; 4];
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c if c < ' ' || matches!(c, '<' | '>' | '&') => {
                let b = c as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            c => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
        }
    }
    out.push(b'"');
}

fn push_newline(out: &mut Vec<u8>, depth: usize) {
    out.push(b'\n');
    for _ in 0..depth {
        out.extend_from_slice(b"  ");
    }
}

/// Appends `items` in MarshalIndent's layout: one item per line, indented one level deeper than
/// the brackets; empty containers stay `[]` / `{}`.
fn push_container<T>(
    out: &mut Vec<u8>,
    depth: usize,
    brackets: (u8, u8),
    items: impl ExactSizeIterator<Item = T>,
    mut item: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(brackets.0);
    if items.len() > 0 {
        for (i, x) in items.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_newline(out, depth + 1);
            item(out, x);
        }
        push_newline(out, depth);
    }
    out.push(brackets.1);
}

fn push_value(out: &mut Vec<u8>, value: &Value, depth: usize) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { &b"true"[..] } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => push_go_string(out, s),
        Value::Array(items) => push_container(out, depth, (b'[', b']'), items.iter(), |out, v| {
            push_value(out, v, depth + 1)
        }),
        Value::Object(map) => {
            // Go writes a map's keys sorted; serde_json's map keeps insertion order when a
            // dependency turns on its `preserve_order` feature, so sort here.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            push_container(
                out,
                depth,
                (b'{', b'}'),
                entries.into_iter(),
                |out, (k, v)| {
                    push_go_string(out, k);
                    out.extend_from_slice(b": ");
                    push_value(out, v, depth + 1);
                },
            )
        }
    }
}

fn push_node(out: &mut Vec<u8>, node: &Node<'_>, depth: usize) {
    match node {
        Node::Str(s) => push_go_string(out, s),
        Node::Json(v) => push_value(out, v, depth),
        Node::Array(items) => push_container(out, depth, (b'[', b']'), items.iter(), |out, n| {
            push_node(out, n, depth + 1)
        }),
        Node::Object(fields) => {
            push_container(out, depth, (b'{', b'}'), fields.iter(), |out, (k, n)| {
                push_go_string(out, k);
                out.extend_from_slice(b": ");
                push_node(out, n, depth + 1);
            })
        }
    }
}

/// The account file exactly as the reference gateway writes it (`json.MarshalIndent(acc, "",
/// "  ")`, no trailing newline), followed by the keys it does not know that the imported file
/// had (`extra`), sorted as Go sorts a map's keys. Contains the account's credentials.
pub fn reference_json(record: &AccountRecord) -> Vec<u8> {
    let mut fields: Vec<(&str, Node<'_>)> = vec![
        ("email", Node::Str(&record.email)),
        ("fullName", Node::Str(&record.full_name)),
        ("authorization", Node::Str(record.authorization.expose())),
        (
            "cookies",
            Node::Array(
                record
                    .cookies
                    .iter()
                    .map(|c| {
                        Node::Object(vec![
                            ("name", Node::Str(&c.name)),
                            ("value", Node::Str(c.value.expose())),
                            ("domain", Node::Str(&c.domain)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ];
    if let Some(cs) = record.cookie_string.as_ref().filter(|s| !s.is_empty()) {
        fields.push(("cookie_string", Node::Str(cs.expose())));
    }
    if !record.response_headers.is_empty() {
        fields.push((
            "response_headers",
            Node::Object(
                record
                    .response_headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), Node::Str(v.expose())))
                    .collect(),
            ),
        ));
    }
    fields.push(("timestamp", Node::Str(&record.timestamp)));
    if !record.config_id.is_empty() {
        fields.push(("configId", Node::Str(&record.config_id)));
    }
    if !record.csesidx.is_empty() {
        fields.push(("csesidx", Node::Str(&record.csesidx)));
    }
    let mut extra: Vec<(&String, &Value)> = record.extra.iter().collect();
    extra.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (k, v) in extra {
        // A known key cannot come from an import; if one was put there by hand, the field
        // already written wins rather than producing a duplicate key.
        if !KNOWN_KEYS.contains(&k.as_str()) {
            fields.push((k, Node::Json(v)));
        }
    }
    let mut out = Vec::with_capacity(1024);
    push_node(&mut out, &Node::Object(fields), 0);
    out
}

// ---------------------------------------------------------------------------------------------
// File names.

/// A safe file name for an account: `<email>.json` with every character other than ASCII
/// letters, digits and `@ . _ + -` replaced by `_`, runs of dots collapsed to one, leading and
/// trailing dots removed, at most 200 bytes before `.json`; `account.json` when nothing is
/// left. Never contains a path separator and is never `.` or `..`. An ordinary e-mail address
/// keeps its name (and case), as the reference names its files.
pub fn file_name_for(email: &str) -> String {
    let mut stem = String::with_capacity(email.len().min(MAX_STEM));
    let mut previous_dot = false;
    for c in email.trim().chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '+' | '-') {
            c
        } else {
            '_'
        };
        if c == '.' && (previous_dot || stem.is_empty()) {
            // Collapses `..` and drops leading dots in one go.
            previous_dot = true;
            continue;
        }
        previous_dot = c == '.';
        if stem.len() == MAX_STEM {
            break;
        }
        stem.push(c);
    }
    let stem = stem.trim_end_matches('.');
    if stem.is_empty() {
        "account.json".to_owned()
    } else {
        format!("{stem}.json")
    }
}

/// `name` with `-n` before its `.json` extension (or at the end when it has none).
fn with_suffix(name: &str, n: u32) -> String {
    match name.strip_suffix(".json") {
        Some(stem) => format!("{stem}-{n}.json"),
        None => format!("{name}-{n}"),
    }
}

/// Whether `name` names an entry directly inside a directory: no separator, not `.`/`..`.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).file_name() == Some(std::ffi::OsStr::new(name))
}

// ---------------------------------------------------------------------------------------------
// Import.

/// A UTF-8 byte-order mark, as some editors put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

fn parse_labelled(
    source: &str,
    label: &str,
    bytes: &[u8],
) -> Vec<(String, Result<AccountRecord, String>)> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return vec![(label.to_owned(), Err(format!("not valid JSON ({e})")))],
    };
    match value {
        Value::Object(obj) => vec![(label.to_owned(), parse_account_object(source, &obj))],
        Value::Array(items) if items.is_empty() => vec![(
            label.to_owned(),
            Err("an empty array: there is no account in it".to_owned()),
        )],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let name = format!("{label}[{i}]");
                let parsed = match item {
                    Value::Object(obj) => parse_account_object(source, obj),
                    _ => Err("not a JSON object".to_owned()),
                };
                (name, parsed)
            })
            .collect(),
        _ => vec![(
            label.to_owned(),
            Err("neither an account object nor an array of them".to_owned()),
        )],
    }
}

/// Parses a file or request body holding ONE account object in the reference format, or a
/// JSON array of them. `name` is recorded as each account's source file and names what is
/// rejected: `name` itself, or `name[i]` for the i-th element of an array. An empty array is
/// rejected (it holds no account).
pub fn parse_documents(name: &str, bytes: &[u8]) -> Vec<Result<AccountRecord, Rejected>> {
    parse_labelled(name, name, bytes)
        .into_iter()
        .map(|(name, parsed)| parsed.map_err(|reason| Rejected { name, reason }))
        .collect()
}

fn read_file(path: &Path, incoming: &mut Vec<Incoming>, rejected: &mut Vec<Rejected>) {
    let label = path.display().to_string();
    let source = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| label.clone());
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            rejected.push(Rejected {
                name: label,
                reason: format!("cannot be read ({e})"),
            });
            return;
        }
    };
    for (name, parsed) in parse_labelled(&source, &label, &bytes) {
        match parsed {
            Ok(record) => incoming.push(Incoming { name, record }),
            Err(reason) => rejected.push(Rejected { name, reason }),
        }
    }
}

/// Imports each path: a file (one account object or an array of them), or a directory (every
/// `*.json` directly inside it, sorted, not recursive). Idempotent. Report entries are named by
/// the path as given (with `[i]` for array elements); each account's source file is the file's
/// name. A path that does not exist, or a directory without `*.json` files, is rejected.
pub fn import_paths(store: &Store, paths: &[PathBuf]) -> Result<ImportReport, StoreError> {
    let mut incoming = Vec::new();
    let mut rejected = Vec::new();
    for path in paths {
        let label = path.display().to_string();
        match std::fs::metadata(path) {
            Err(e) => rejected.push(Rejected {
                name: label,
                reason: format!("cannot be read ({e})"),
            }),
            Ok(meta) if meta.is_dir() => match json_files_in(path) {
                Ok(files) if files.is_empty() => rejected.push(Rejected {
                    name: label,
                    reason: "the directory holds no *.json file".to_owned(),
                }),
                Ok(files) => {
                    for file in files {
                        read_file(&file, &mut incoming, &mut rejected);
                    }
                }
                Err(e) => rejected.push(Rejected {
                    name: label,
                    reason: format!("cannot list the directory ({e})"),
                }),
            },
            Ok(_) => read_file(path, &mut incoming, &mut rejected),
        }
    }
    // The gateway is not running (the CLI holds the database): the pool picks the changed
    // records up at its next start.
    Ok(crate::accounts::service::merge(store, incoming, rejected, "")?.report)
}

// ---------------------------------------------------------------------------------------------
// Export.

/// Creates `dir` (and missing parents) with mode 0700 on unix; an existing dir is left as is.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes `bytes` to `dir/name` atomically: a temporary file in `dir` (mode 0600 on unix),
/// flushed to disk, then renamed over the target. Readers see the old file or the new one.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let target = dir.join(name);
    let mut attempt = 0u32;
    let (tmp, mut file) = loop {
        // Hidden, and not ending in `.json`: never taken for an account file by a scan.
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        match options.open(&tmp) {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    let done = written.and_then(|()| std::fs::rename(&tmp, &target));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Flushes a directory's entries (the renames into it) to disk, where that is possible.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Writes every stored account as `<dir>/<file_name_for(email)>` in the reference layout
/// ([`reference_json`]), mode 0600 on unix, creating `dir` (mode 0700) if missing. Two
/// e-mails that map to the same file name (compared case-insensitively) get `-2`, `-3`, …
/// before `.json`. Each file is written atomically. Existing files of other names are left
/// alone. Records that cannot be read are reported in `skipped`, not exported.
pub fn export_to_dir(store: &Store, dir: &Path) -> Result<ExportReport, FilesError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| FilesError::Io { path, source }
    };
    create_private_dir(dir).map_err(io_err(dir))?;
    let mut report = ExportReport::default();
    let mut used: HashSet<String> = HashSet::new();
    for (key, record) in store.accounts()? {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                report.skipped.push(Rejected {
                    name: key,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let base = file_name_for(&record.email);
        let mut name = base.clone();
        let mut n = 1;
        while !used.insert(name.to_lowercase()) {
            n += 1;
            name = with_suffix(&base, n);
        }
        let path = dir.join(&name);
        if !is_plain_file_name(&name) || path.parent() != Some(dir) {
            return Err(FilesError::OutsideDir {
                path,
                dir: dir.to_path_buf(),
            });
        }
        write_atomic(dir, &name, &reference_json(&record)).map_err(io_err(&path))?;
        report.written.push((record.email, path));
    }
    sync_dir(dir);
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Retiring a file.

/// Moves `<data_dir>/<file_name>` into `<data_dir>/expired/` (created with mode 0700), so
/// that the start-up import, which takes `<data_dir>/*.json`, no longer brings the account
/// back. A file already there under that name is kept: the moved one gets `-2`, `-3`, …
/// before `.json`. Returns the new path, or `None` when there was no such file.
///
/// `file_name` must be a plain file name (no path separator, not `.` or `..`), otherwise
/// nothing is moved and the error is `InvalidInput`; a directory is not moved either.
pub fn retire_file(data_dir: &Path, file_name: &str) -> std::io::Result<Option<PathBuf>> {
    if !is_plain_file_name(file_name) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{file_name:?} is not a plain file name"),
        ));
    }
    let source = data_dir.join(file_name);
    match std::fs::symlink_metadata(&source) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(meta) if meta.is_dir() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is a directory", source.display()),
            ));
        }
        Ok(_) => {}
    }
    let expired = data_dir.join(EXPIRED_DIR);
    create_private_dir(&expired)?;
    let mut name = file_name.to_owned();
    for n in 2..=10_000u32 {
        let target = expired.join(&name);
        match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::rename(&source, &target)?;
                sync_dir(&expired);
                sync_dir(data_dir);
                return Ok(Some(target));
            }
            Err(e) => return Err(e),
            Ok(_) => name = with_suffix(file_name, n),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("too many retired copies of {file_name}"),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use business2api_shared::Secret;
    use serde_json::{Map, json};

    use super::*;
    use crate::pool::import::parse_account_file;
    use crate::store::{ACCOUNT_SCHEMA_VERSION, StoredCookie, Upsert};

    /// What the reference writes for this account (`json.MarshalIndent(acc, "", "  ")`),
    /// written out by hand: HTML characters escaped, non-ASCII kept, no `cookie_string`, no
    /// trailing newline.
    const GO_FILE: &str = r#"{
  "email": "alice@example.com",
  "fullName": "Zoë Ünal 李雷",
  "authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjc2VzaWR4LzEyMyJ9.c2ln",
  "cookies": [
    {
      "name": "__Secure-C_SES",
      "value": "CSE.a\u0026b\u003cc\u003ed",
      "domain": ".gemini.google"
    },
    {
      "name": "NID",
      "value": "x=1",
      "domain": ".google.com"
    }
  ],
  "response_headers": {
    "authorization": "Bearer abc",
    "set-cookie": "a=b; Path=/"
  },
  "timestamp": "2026-01-02T03:04:05+08:00",
  "configId": "0f1e2d3c-aaaa",
  "csesidx": "123456"
}"#;

    fn alice() -> AccountRecord {
        AccountRecord {
            schema_version: ACCOUNT_SCHEMA_VERSION,
            email: "alice@example.com".into(),
            full_name: "Zoë Ünal 李雷".into(),
            authorization: Secret::new(
                "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjc2VzaWR4LzEyMyJ9.c2ln",
            ),
            cookies: vec![
                StoredCookie {
                    name: "__Secure-C_SES".into(),
                    value: Secret::new("CSE.a&b<c>d"),
                    domain: ".gemini.google".into(),
                },
                StoredCookie {
                    name: "NID".into(),
                    value: Secret::new("x=1"),
                    domain: ".google.com".into(),
                },
            ],
            cookie_string: None,
            response_headers: BTreeMap::from([
                ("set-cookie".to_owned(), Secret::new("a=b; Path=/")),
                ("authorization".to_owned(), Secret::new("Bearer abc")),
            ]),
            timestamp: "2026-01-02T03:04:05+08:00".into(),
            config_id: "0f1e2d3c-aaaa".into(),
            csesidx: "123456".into(),
            extra: Map::new(),
            source_file: Some("alice@example.com.json".into()),
            added_at: None,
            updated_at: None,
        }
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn export_matches_the_reference_byte_for_byte() {
        assert_eq!(text(&reference_json(&alice())), GO_FILE);
        // And a file the reference wrote comes back unchanged.
        let parsed = parse_account_file("alice@example.com.json", GO_FILE.as_bytes()).unwrap();
        assert_eq!(parsed, alice());
        assert_eq!(text(&reference_json(&parsed)), GO_FILE);
    }

    #[test]
    fn empty_and_optional_fields_follow_the_reference() {
        let mut r = alice();
        r.full_name.clear();
        r.cookies.clear();
        r.response_headers.clear();
        r.cookie_string = Some(Secret::new(""));
        r.config_id.clear();
        r.csesidx.clear();
        r.authorization = Secret::default();
        assert_eq!(
            text(&reference_json(&r)),
            "{\n  \"email\": \"alice@example.com\",\n  \"fullName\": \"\",\n  \
             \"authorization\": \"\",\n  \"cookies\": [],\n  \
             \"timestamp\": \"2026-01-02T03:04:05+08:00\"\n}"
        );
        r.cookie_string = Some(Secret::new("a=1; b=2"));
        let out = reference_json(&r);
        assert!(
            text(&out)
                .contains("\"cookies\": [],\n  \"cookie_string\": \"a=1; b=2\",\n  \"timestamp\""),
            "{}",
            text(&out)
        );
    }

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        let mut out = Vec::new();
        push_go_string(
            &mut out,
            "q\"b\\n\nr\rt\tb\u{8}f\u{c}\u{1}\u{1f}\u{7f}<>&\u{2028}\u{2029}é/😀",
        );
        assert_eq!(
            text(&out),
            r#""q\"b\\n\nr\rt\tb\bf\f\u0001\u001f"#.to_owned()
                + "\u{7f}"
                + r#"\u003c\u003e\u0026\u2028\u2029é/😀""#
        );
    }

    #[test]
    fn unknown_keys_round_trip_in_go_layout_after_the_known_ones() {
        let file = r#"{
  "email": "bob@example.com",
  "future": {"list": [1, 2.5, {"deep": null}], "empty": [], "none": {}, "flag": true},
  "fullName": "Bob",
  "authorization": "",
  "cookies": [],
  "timestamp": "t",
  "alpha": "a<b"
}"#;
        let r = parse_account_file("bob.json", file.as_bytes()).unwrap();
        assert_eq!(r.extra.len(), 2);
        let out = reference_json(&r);
        assert_eq!(
            text(&out),
            r#"{
  "email": "bob@example.com",
  "fullName": "Bob",
  "authorization": "",
  "cookies": [],
  "timestamp": "t",
  "alpha": "a\u003cb",
  "future": {
    "empty": [],
    "flag": true,
    "list": [
      1,
      2.5,
      {
        "deep": null
      }
    ],
    "none": {}
  }
}"#
        );
        let again = parse_account_file("bob.json", &out).unwrap();
        assert_eq!(again, r);
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap(),
            serde_json::from_str::<Value>(file).unwrap()
        );
    }

    #[test]
    fn known_keys_put_into_extra_by_hand_are_not_duplicated() {
        let mut r = alice();
        r.extra.insert("email".into(), json!("other@x.com"));
        let out: Value = serde_json::from_slice(&reference_json(&r)).unwrap();
        assert_eq!(out["email"], "alice@example.com");
        assert_eq!(text(&reference_json(&r)).matches("\"email\"").count(), 1);
    }

    #[test]
    fn file_names_are_safe_for_hostile_addresses() {
        let cases = [
            ("alice@example.com", "alice@example.com.json"),
            (
                "Bob.Smith+tag@Example.COM",
                "Bob.Smith+tag@Example.COM.json",
            ),
            ("../../etc/passwd", "_._etc_passwd.json"),
            ("a/b@c", "a_b@c.json"),
            ("a\\b@c", "a_b@c.json"),
            ("..", "account.json"),
            (".", "account.json"),
            ("", "account.json"),
            ("   ", "account.json"),
            (".hidden@x", "hidden@x.json"),
            ("a..b@x..com.", "a.b@x.com.json"),
            ("nul\0byte@x", "nul_byte@x.json"),
            ("用户@例子.公司", "__@__.__.json"),
            ("a b:c*d?@x", "a_b_c_d_@x.json"),
        ];
        for (email, want) in cases {
            assert_eq!(file_name_for(email), want, "for {email:?}");
        }
        let long = format!("{}@x.com", "a".repeat(500));
        let name = file_name_for(&long);
        assert_eq!(name, format!("{}.json", "a".repeat(200)));
        // Dots at the cut are removed rather than ending up before `.json`.
        let dotted = format!("{}.{}", "b".repeat(199), "c".repeat(50));
        assert_eq!(file_name_for(&dotted), format!("{}.json", "b".repeat(199)));
        for email in ["../x", "/abs@x", "..\\..\\x", "a/../../b", &long] {
            let name = file_name_for(email);
            assert!(is_plain_file_name(&name), "{name}");
            assert!(!name.starts_with('.'), "{name}");
            assert!(!name.contains(".."), "{name}");
        }
    }

    #[test]
    fn arrays_yield_one_result_per_element_and_name_the_bad_ones() {
        let good = |email: &str| {
            json!({"email": email, "fullName": "", "authorization": "", "cookies": [],
                   "timestamp": "t"})
        };
        let body = serde_json::to_vec(&json!([
            good("a@x.com"),
            42,
            {"email": ""},
            good("b@x.com")
        ]))
        .unwrap();
        let results = parse_documents("upload.json", &body);
        assert_eq!(results.len(), 4);
        assert_eq!(results[0].as_ref().unwrap().email, "a@x.com");
        assert_eq!(
            results[0].as_ref().unwrap().source_file.as_deref(),
            Some("upload.json")
        );
        let bad1 = results[1].as_ref().unwrap_err();
        assert_eq!(bad1.name, "upload.json[1]");
        assert!(bad1.reason.contains("not a JSON object"), "{}", bad1.reason);
        let bad2 = results[2].as_ref().unwrap_err();
        assert_eq!(bad2.name, "upload.json[2]");
        assert!(bad2.reason.contains("email"), "{}", bad2.reason);
        assert_eq!(results[3].as_ref().unwrap().email, "b@x.com");

        // One object (after a byte-order mark) is one account.
        let mut single = BOM.to_vec();
        single.extend_from_slice(&serde_json::to_vec(&good("c@x.com")).unwrap());
        let results = parse_documents("c.json", &single);
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].as_ref().unwrap().email, "c@x.com");

        for (body, reason) in [
            (&b"[]"[..], "empty array"),
            (b"\"x\"", "neither"),
            (b"{", "not valid JSON"),
        ] {
            let results = parse_documents("d.json", body);
            assert_eq!(results.len(), 1);
            let err = results[0].as_ref().unwrap_err();
            assert_eq!(err.name, "d.json");
            assert!(err.reason.contains(reason), "{}", err.reason);
        }
    }

    fn account_json(email: &str) -> Vec<u8> {
        let mut r = alice();
        r.email = email.into();
        reference_json(&r)
    }

    #[test]
    fn import_paths_takes_files_arrays_and_directories_idempotently() {
        let root = tempfile::tempdir().unwrap();
        let store_dir = root.path().join("store");
        std::fs::create_dir(&store_dir).unwrap();
        let store = Store::open(&store_dir).unwrap();
        let dir = root.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("b@x.com.json"), account_json("b@x.com")).unwrap();
        std::fs::write(dir.join("a@x.com.json"), account_json("a@x.com")).unwrap();
        std::fs::write(dir.join("bad.json"), b"[1]").unwrap();
        std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
        std::fs::create_dir(dir.join("nested.json")).unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join("sub").join("c@x.com.json"),
            account_json("c@x.com"),
        )
        .unwrap();
        let array = root.path().join("many.json");
        let both = format!(
            "[{}, {}]",
            text(&account_json("d@x.com")),
            text(&account_json("a@x.com"))
        );
        std::fs::write(&array, both).unwrap();
        let missing = root.path().join("missing.json");
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();

        let paths = vec![dir.clone(), array.clone(), missing.clone(), empty.clone()];
        let report = import_paths(&store, &paths).unwrap();
        let d = |n: &str| dir.join(n).display().to_string();
        let a = |i: usize| format!("{}[{i}]", array.display());
        assert_eq!(
            report.imported,
            vec![
                (d("a@x.com.json"), Upsert::Inserted),
                (d("b@x.com.json"), Upsert::Inserted),
                (a(0), Upsert::Inserted),
                // Same content as the directory's copy, but from another source file.
                (a(1), Upsert::Updated),
            ]
        );
        let rejected: Vec<&str> = report.rejected.iter().map(|r| r.name.as_str()).collect();
        let bad = format!("{}[0]", d("bad.json"));
        let missing_label = missing.display().to_string();
        let empty_label = empty.display().to_string();
        assert_eq!(
            rejected,
            [bad.as_str(), missing_label.as_str(), empty_label.as_str()]
        );
        let keys: Vec<String> = store
            .accounts()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["a@x.com", "b@x.com", "d@x.com"], "not recursive");
        let a_rec = store.account("a@x.com").unwrap().unwrap();
        assert_eq!(a_rec.source_file.as_deref(), Some("many.json"));

        let again = import_paths(&store, std::slice::from_ref(&array)).unwrap();
        assert!(
            again.imported.iter().all(|(_, u)| *u == Upsert::Unchanged),
            "{:?}",
            again.imported
        );
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn export_writes_each_account_privately_inside_the_dir() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let mut records = Vec::new();
        let emails = [
            "alice@example.com",
            "a_b@c",
            "A:B@C",
            "a/b@c",
            "a b@c",
            "../../evil@x.com",
        ];
        for email in emails {
            let mut r = alice();
            r.email = email.into();
            store.upsert_account(&r).unwrap();
            records.push(r);
        }
        store.put_raw_account("broken@x.com", b"not json").unwrap();
        let out = root.path().join("export").join("nested");
        // A stale file of another name is left alone; one of the same name is replaced.
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("keep.json"), b"{}").unwrap();
        std::fs::write(out.join("alice@example.com.json"), b"old").unwrap();

        let report = export_to_dir(&store, &out).unwrap();
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.skipped[0].name, "broken@x.com");
        let written: BTreeMap<String, String> = report
            .written
            .iter()
            .map(|(email, path)| {
                assert_eq!(path.parent(), Some(out.as_path()));
                (
                    email.clone(),
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                )
            })
            .collect();
        // Four addresses map to `a_b@c.json` (one only case-insensitively); they are suffixed
        // in key order: "a b@c" < "a/b@c" < "a:b@c" < "a_b@c".
        assert_eq!(written["../../evil@x.com"], "_._evil@x.com.json");
        assert_eq!(written["a b@c"], "a_b@c.json");
        assert_eq!(written["a/b@c"], "a_b@c-2.json");
        assert_eq!(written["A:B@C"], "A_B@C-3.json");
        assert_eq!(written["a_b@c"], "a_b@c-4.json");
        assert_eq!(written["alice@example.com"], "alice@example.com.json");
        for r in &records {
            let path = out.join(&written[&r.email]);
            assert_eq!(std::fs::read(&path).unwrap(), reference_json(r));
        }
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names.len(),
            7,
            "six accounts, the untouched file, no temp files: {names:?}"
        );
        assert_eq!(std::fs::read(out.join("keep.json")).unwrap(), b"{}");
        assert!(!root.path().join("evil@x.com.json").exists());
        #[cfg(unix)]
        {
            assert_eq!(mode(&out.join("alice@example.com.json")), 0o600);
            assert_eq!(mode(&out.join("_._evil@x.com.json")), 0o600);
            let fresh = root.path().join("fresh");
            export_to_dir(&store, &fresh).unwrap();
            assert_eq!(mode(&fresh), 0o700);
        }
    }

    #[test]
    fn retire_moves_the_file_out_of_the_scanned_dir_without_clobbering() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        std::fs::write(data.join("a@x.com.json"), b"first").unwrap();
        let moved = retire_file(data, "a@x.com.json").unwrap().unwrap();
        assert_eq!(moved, data.join("expired").join("a@x.com.json"));
        assert!(!data.join("a@x.com.json").exists());
        assert_eq!(std::fs::read(&moved).unwrap(), b"first");
        #[cfg(unix)]
        assert_eq!(mode(&data.join("expired")), 0o700);

        std::fs::write(data.join("a@x.com.json"), b"second").unwrap();
        let moved = retire_file(data, "a@x.com.json").unwrap().unwrap();
        assert_eq!(moved, data.join("expired").join("a@x.com-2.json"));
        std::fs::write(data.join("a@x.com.json"), b"third").unwrap();
        let moved = retire_file(data, "a@x.com.json").unwrap().unwrap();
        assert_eq!(moved, data.join("expired").join("a@x.com-3.json"));
        assert_eq!(
            std::fs::read(data.join("expired").join("a@x.com.json")).unwrap(),
            b"first"
        );

        assert_eq!(retire_file(data, "gone.json").unwrap(), None);
        // The start-up scan no longer sees it.
        assert!(json_files_in(data).unwrap().is_empty());
    }

    #[test]
    fn retire_refuses_anything_but_a_plain_file_name() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(root.path().join("outside.json"), b"x").unwrap();
        std::fs::create_dir(data.join("at")).unwrap();
        for name in [
            "../outside.json",
            "a/b.json",
            ".",
            "..",
            "",
            "x\0y",
            "..\\outside.json",
        ] {
            let err = retire_file(&data, name).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{name:?}");
        }
        assert_eq!(
            retire_file(&data, "at").unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
        assert!(root.path().join("outside.json").exists());
        assert!(data.join("at").is_dir());
        assert!(!data.join("expired").exists());
    }
}
