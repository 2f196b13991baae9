//! Placeholder replaced by the account-files module (reference-format export, sanitised names).

use std::path::{Path, PathBuf};

/// Moves `<data_dir>/<file_name>` into `<data_dir>/expired/`.
pub fn retire_file(data_dir: &Path, file_name: &str) -> std::io::Result<Option<PathBuf>> {
    let _ = (data_dir, file_name);
    Ok(None)
}

use crate::pool::import::{Rejected, parse_account_file};
use crate::store::AccountRecord;

/// One account object or an array of them.
pub fn parse_documents(name: &str, bytes: &[u8]) -> Vec<Result<AccountRecord, Rejected>> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let n = format!("{name}[{i}]");
                let bytes = serde_json::to_vec(item).unwrap_or_default();
                parse_account_file(&n, &bytes).map_err(|reason| Rejected { name: n, reason })
            })
            .collect(),
        _ => vec![parse_account_file(name, bytes).map_err(|reason| Rejected {
            name: name.to_owned(),
            reason,
        })],
    }
}

/// The account file in the reference layout.
pub fn reference_json(record: &AccountRecord) -> Vec<u8> {
    let _ = record;
    b"{}".to_vec()
}
