//! `business2api accounts …`: offline management of the stored accounts (import, export,
//! list), for operators migrating from the reference gateway or backing up. The commands open
//! the same database as the gateway (`<data_dir>/business2api.redb`), which only one process
//! can hold open at a time.
//!
//! Output goes to the writers given, so that the commands can be tested without a process;
//! credentials (cookie values, `authorization`) are never printed: only `export` writes them,
//! into the files the operator asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::Serialize;

use crate::config::Settings;
use crate::pool::files::{self, export_to_dir, import_paths};
use crate::pool::import::{credentials_of, json_files_in, parse_account_file};
use crate::store::{AccountRecord, Store, StoreError, Upsert};
use crate::telemetry::printable;

/// The `accounts` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum AccountsCommand {
    /// Import account files in the reference format into the database. Each PATH is a file
    /// holding one account object or a JSON array of them, or a directory (every *.json
    /// directly inside it). Importing the same file again changes nothing. Prints what
    /// happened to each file, and names each imported account that cannot serve (and why);
    /// exits with 1 if anything was rejected.
    Import {
        /// Account files (`<email>.json`, one object or an array) or directories of them.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Write every stored account to DIR as <email>.json, byte for byte as the reference
    /// gateway writes it (mode 0600; DIR is created with mode 0700). The files hold the
    /// accounts' cookies: keep them private.
    Export {
        /// Directory to write the account files into (created when missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// List the stored accounts: e-mail, log label (acct-…), whether the account can be used
    /// (or why not), config id, number of cookies, source file. Never prints credentials.
    List {
        /// Print a JSON array of {email, label, usable, reason, config_id, cookies, source_file}.
        #[arg(long)]
        json: bool,
    },
}

/// Exit code of a command that did everything it was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code of a command that failed or rejected something.
pub const EXIT_FAILURE: u8 = 1;

/// One line of `accounts list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountSummary {
    pub email: String,
    /// The label log lines use for this account (`acct-` and 8 hex digits).
    pub label: String,
    /// Whether the gateway can use the account.
    pub usable: bool,
    /// Why it cannot, when it cannot.
    pub reason: Option<String>,
    /// The account's `configId`, else `default_config`; `None` when neither is set.
    pub config_id: Option<String>,
    /// How many cookies are stored.
    pub cookies: usize,
    /// The file the account was imported from.
    pub source_file: Option<String>,
}

/// What each stored account looks like to the gateway, in key order. A record that cannot be
/// read is listed under its key as unusable, with the reason.
pub fn summaries(store: &Store, default_config: &str) -> Result<Vec<AccountSummary>, StoreError> {
    Ok(store
        .accounts()?
        .into_iter()
        .map(|(key, record)| match record {
            Ok(record) => summary(&record, default_config),
            Err(e) => AccountSummary {
                label: business2api_shared::AccountKey::new(&key).label(),
                email: key,
                usable: false,
                reason: Some(e.to_string()),
                config_id: None,
                cookies: 0,
                source_file: None,
            },
        })
        .collect())
}

fn summary(record: &AccountRecord, default_config: &str) -> AccountSummary {
    let reason = credentials_of(record, default_config).err();
    let config_id = [record.config_id.as_str(), default_config]
        .into_iter()
        .find(|c| !c.is_empty())
        .map(str::to_owned);
    AccountSummary {
        email: record.email.clone(),
        label: business2api_shared::AccountKey::new(&record.email).label(),
        usable: reason.is_none(),
        reason,
        config_id,
        cookies: record.cookies.len(),
        source_file: record.source_file.clone(),
    }
}

/// Runs one `accounts` command against the database in `settings.data_dir`, printing to
/// `out` (results) and `err` (errors, warnings). Returns the process exit code.
pub fn run(
    settings: &Settings,
    command: &AccountsCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    match run_inner(settings, command, out, err) {
        Ok(code) => code,
        Err(e) => {
            // Output that cannot be written (a closed pipe) is all that can fail here.
            let _ = writeln!(err, "business2api: cannot write the output: {e}");
            EXIT_FAILURE
        }
    }
}

fn run_inner(
    settings: &Settings,
    command: &AccountsCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let Some(store) = open_store(&settings.data_dir, err)? else {
        return Ok(EXIT_FAILURE);
    };
    match command {
        AccountsCommand::Import { paths } => import(
            &store,
            paths,
            settings.accounts_dir(),
            &settings.default_config,
            out,
            err,
        ),
        AccountsCommand::Export { dir } => export(&store, dir, out, err),
        AccountsCommand::List { json } => list(&store, &settings.default_config, *json, out, err),
    }
}

/// Opens the database as the gateway does (creating the data dir, mode 0700, if missing).
/// Says why when it cannot, in particular when a running gateway holds it.
fn open_store(data_dir: &Path, err: &mut dyn Write) -> std::io::Result<Option<Store>> {
    if let Err(e) = files::create_private_dir(data_dir) {
        writeln!(
            err,
            "business2api: cannot prepare the data dir {}: {e}",
            data_dir.display()
        )?;
        return Ok(None);
    }
    match Store::open(data_dir) {
        Ok(store) => Ok(Some(store)),
        Err(StoreError::Open {
            path,
            source: redb::DatabaseError::DatabaseAlreadyOpen,
        }) => {
            writeln!(
                err,
                "business2api: the database {} is in use by a running gateway (only one process \
                 can open it at a time).\nStop the gateway and run this command again, or use \
                 the gateway's admin API instead: POST /admin/pool-files/import, \
                 GET /admin/pool-files/export.",
                path.display()
            )?;
            Ok(None)
        }
        Err(e) => {
            writeln!(err, "business2api: {e}")?;
            Ok(None)
        }
    }
}

/// Every readable stored record, by key.
fn snapshot(store: &Store) -> Result<BTreeMap<String, AccountRecord>, StoreError> {
    Ok(store
        .accounts()?
        .into_iter()
        .filter_map(|(k, r)| r.ok().map(|r| (k, r)))
        .collect())
}

fn import(
    store: &Store,
    paths: &[PathBuf],
    accounts_dir: &Path,
    default_config: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let outcome = snapshot(store).and_then(|before| {
        let report = import_paths(store, paths)?;
        let after = snapshot(store)?;
        Ok((before, report, after))
    });
    let (before, report, after) = match outcome {
        Ok(x) => x,
        Err(e) => {
            writeln!(err, "business2api: the import failed: {e}")?;
            return Ok(EXIT_FAILURE);
        }
    };
    let (mut inserted, mut updated, mut unchanged) = (0, 0, 0);
    for (name, what) in &report.imported {
        let word = match what {
            Upsert::Inserted => {
                inserted += 1;
                "inserted"
            }
            Upsert::Updated => {
                updated += 1;
                "updated"
            }
            Upsert::Unchanged => {
                unchanged += 1;
                "unchanged"
            }
        };
        writeln!(out, "{word:<9}  {}", printable(name))?;
    }
    for r in &report.rejected {
        writeln!(
            out,
            "{:<9}  {}: {}",
            "rejected",
            printable(&r.name),
            printable(&r.reason)
        )?;
    }
    let changed: BTreeSet<&String> = after
        .iter()
        .filter(|(k, r)| before.get(*k) != Some(r))
        .map(|(k, _)| k)
        .collect();
    // Stored, but unable to serve (e.g. no `__Secure-C_SES` cookie): said now, not first at
    // start-up or in `accounts list`.
    let mut unusable = 0;
    for key in &changed {
        if let Some(record) = after.get(*key)
            && let Err(reason) = credentials_of(record, default_config)
        {
            unusable += 1;
            writeln!(
                out,
                "{:<9}  {}: imported, but it cannot serve: {}",
                "unusable",
                printable(&record.email),
                printable(&reason)
            )?;
        }
    }
    writeln!(
        out,
        "{} account(s) imported ({inserted} inserted, {updated} updated, {unchanged} unchanged), \
         {} rejected{}",
        report.imported.len(),
        report.rejected.len(),
        if unusable > 0 {
            format!(", {unusable} imported but unusable (see above)")
        } else {
            String::new()
        }
    )?;
    for (path, email) in stale_copies(&after, &changed, accounts_dir) {
        writeln!(
            err,
            "business2api: note: {} holds a different copy of {email}; the gateway imports \
             that directory at start-up and would put that copy back. Replace or remove the file.",
            printable(&path.display().to_string()),
            email = printable(&email),
        )?;
    }
    Ok(if report.rejected.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    })
}

/// Files in the accounts dir that hold one of the `changed` accounts with other content: the
/// start-up import would overwrite the stored account with them.
fn stale_copies(
    stored: &BTreeMap<String, AccountRecord>,
    changed: &BTreeSet<&String>,
    accounts_dir: &Path,
) -> Vec<(PathBuf, String)> {
    let Ok(files) = json_files_in(accounts_dir) else {
        return Vec::new();
    };
    files
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).ok()?;
            let mut on_disk = parse_account_file(&name, &bytes).ok()?;
            let key = on_disk.key();
            if !changed.contains(&key) {
                return None;
            }
            let current = stored.get(&key)?;
            on_disk.source_file.clone_from(&current.source_file);
            on_disk.added_at = current.added_at;
            on_disk.updated_at = current.updated_at;
            (on_disk != *current).then(|| (path, current.email.clone()))
        })
        .collect()
}

fn export(
    store: &Store,
    dir: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let report = match export_to_dir(store, dir) {
        Ok(report) => report,
        Err(e) => {
            writeln!(err, "business2api: the export failed: {e}")?;
            return Ok(EXIT_FAILURE);
        }
    };
    for (_, path) in &report.written {
        writeln!(out, "wrote    {}", printable(&path.display().to_string()))?;
    }
    for r in &report.skipped {
        writeln!(
            out,
            "skipped  {}: {}",
            printable(&r.name),
            printable(&r.reason)
        )?;
    }
    writeln!(
        out,
        "{} account file(s) written to {} (mode 0600: they hold the accounts' credentials), \
         {} skipped",
        report.written.len(),
        dir.display(),
        report.skipped.len()
    )?;
    Ok(if report.skipped.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    })
}

fn list(
    store: &Store,
    default_config: &str,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let accounts = match summaries(store, default_config) {
        Ok(a) => a,
        Err(e) => {
            writeln!(err, "business2api: cannot list the accounts: {e}")?;
            return Ok(EXIT_FAILURE);
        }
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &accounts)?;
        writeln!(out)?;
        return Ok(EXIT_OK);
    }
    // Stored values are printed escaped: a record imported by an older version may hold control
    // characters that a terminal would act on.
    let emails: Vec<_> = accounts.iter().map(|a| printable(&a.email)).collect();
    let width = emails.iter().map(|e| e.chars().count()).max().unwrap_or(0);
    for (a, email) in accounts.iter().zip(&emails) {
        let state = if a.usable { "usable  " } else { "unusable" };
        write!(
            out,
            "{email:<width$}  {}  {state}  config={}  cookies={}  source={}",
            a.label,
            printable(a.config_id.as_deref().unwrap_or("-")),
            a.cookies,
            printable(a.source_file.as_deref().unwrap_or("-")),
        )?;
        match &a.reason {
            Some(reason) => writeln!(out, "  ({})", printable(reason))?,
            None => writeln!(out)?,
        }
    }
    let usable = accounts.iter().filter(|a| a.usable).count();
    writeln!(out, "{} account(s), {usable} usable", accounts.len())?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::files::reference_json;
    use crate::pool::import::parse_account_file;

    const FILE: &str = r#"{
  "email": "Ann@example.com",
  "fullName": "Ann",
  "authorization": "Bearer SECRET-AUTH",
  "cookies": [
    {
      "name": "__Secure-C_SES",
      "value": "SECRET-COOKIE",
      "domain": ".gemini.google"
    }
  ],
  "timestamp": "2026-01-01T00:00:00Z",
  "csesidx": "42"
}"#;

    fn settings(data_dir: &Path, default_config: &str) -> Settings {
        let config = serde_json::json!({"data_dir": data_dir, "default_config": default_config});
        Settings::from_json_str(&config.to_string(), &|_| None)
            .unwrap()
            .settings
    }

    fn exec(settings: &Settings, command: AccountsCommand) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(settings, &command, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn list_shows_usability_and_falls_back_to_default_config_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("ann.json");
        std::fs::write(&src, FILE).unwrap();
        let data = dir.path().join("data");

        let no_default = settings(&data, "");
        let (code, out, _) = exec(&no_default, AccountsCommand::Import { paths: vec![src] });
        assert_eq!(code, EXIT_OK, "{out}");
        let (code, out, _) = exec(&no_default, AccountsCommand::List { json: false });
        assert_eq!(code, EXIT_OK);
        // The label is the one log lines use for the account.
        let label = business2api_shared::AccountKey::new("ann@example.com").label();
        assert!(
            out.contains(&format!(
                "Ann@example.com  {label}  unusable  config=-  cookies=1  source=ann.json"
            )),
            "{out}"
        );
        assert!(out.contains("default_config"), "the reason is shown: {out}");

        let with_default = settings(&data, "cfg-default");
        let (_, out, _) = exec(&with_default, AccountsCommand::List { json: true });
        let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            listed,
            serde_json::json!([{"email": "Ann@example.com", "label": label, "usable": true, "reason": null,
                "config_id": "cfg-default", "cookies": 1, "source_file": "ann.json"}])
        );
        for secret in ["SECRET-AUTH", "SECRET-COOKIE"] {
            assert!(!out.contains(secret), "{out}");
        }
    }

    #[test]
    fn import_warns_when_the_accounts_dir_would_undo_it_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // The accounts dir (= data dir here) holds an older copy of Ann, and an unrelated file.
        std::fs::write(data.join("Ann@example.com.json"), FILE).unwrap();
        let mut other = parse_account_file("x", FILE.as_bytes()).unwrap();
        other.email = "zed@example.com".into();
        std::fs::write(data.join("zed@example.com.json"), reference_json(&other)).unwrap();
        let newer = FILE.replace("SECRET-COOKIE", "NEWER-COOKIE");
        let src = dir.path().join("upload.json");
        std::fs::write(&src, &newer).unwrap();

        let s = settings(&data, "");
        let (code, out, err) = exec(
            &s,
            AccountsCommand::Import {
                paths: vec![src.clone()],
            },
        );
        assert_eq!(code, EXIT_OK, "{out}{err}");
        assert!(out.contains("inserted   "), "{out}");
        let stale = data.join("Ann@example.com.json").display().to_string();
        assert!(
            err.contains(&stale) && err.contains("Ann@example.com"),
            "{err}"
        );
        assert!(
            !err.contains("zed@"),
            "untouched accounts are not mentioned: {err}"
        );
        assert!(
            !err.contains("NEWER-COOKIE") && !err.contains("SECRET"),
            "{err}"
        );

        // The file now matches the stored account; importing another change warns again,
        // importing the file's content does not.
        std::fs::write(data.join("Ann@example.com.json"), &newer).unwrap();
        std::fs::write(&src, newer.replace("\"Ann\"", "\"Ann B\"")).unwrap();
        let (_, _, err) = exec(
            &s,
            AccountsCommand::Import {
                paths: vec![src.clone()],
            },
        );
        assert!(err.contains(&stale), "{err}");
        std::fs::write(&src, &newer).unwrap();
        let (_, out, err) = exec(&s, AccountsCommand::Import { paths: vec![src] });
        assert!(out.contains("updated"), "{out}");
        assert!(err.is_empty(), "{err}");
    }

    #[test]
    fn rejections_and_skips_fail_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(&dir.path().join("data"), "");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"[{\"email\": 3}]").unwrap();
        let (code, out, _) = exec(
            &s,
            AccountsCommand::Import {
                paths: vec![bad.clone()],
            },
        );
        assert_eq!(code, EXIT_FAILURE);
        assert!(
            out.contains(&format!(
                "rejected   {}[0]: `email` must be a string",
                bad.display()
            )),
            "{out}"
        );
        assert!(out.contains("0 account(s) imported"), "{out}");

        {
            let store = Store::open(&dir.path().join("data")).unwrap();
            store.put_raw_account("broken@x.com", b"{}").unwrap();
        }
        let (code, out, _) = exec(
            &s,
            AccountsCommand::Export {
                dir: dir.path().join("out"),
            },
        );
        assert_eq!(code, EXIT_FAILURE);
        assert!(out.contains("skipped  broken@x.com: "), "{out}");
    }

    #[test]
    fn a_database_held_by_another_handle_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let _held = Store::open(&data).unwrap();
        let (code, out, err) = exec(&settings(&data, ""), AccountsCommand::List { json: false });
        assert_eq!(code, EXIT_FAILURE);
        assert!(out.is_empty());
        assert!(err.contains("in use by a running gateway"), "{err}");
        assert!(err.contains("POST /admin/pool-files/import"), "{err}");
    }
}
