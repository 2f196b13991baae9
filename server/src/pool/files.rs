//! Placeholder replaced by the account-files module (reference-format export, sanitised names).

use std::path::{Path, PathBuf};

/// Moves `<data_dir>/<file_name>` into `<data_dir>/expired/`.
pub fn retire_file(data_dir: &Path, file_name: &str) -> std::io::Result<Option<PathBuf>> {
    let _ = (data_dir, file_name);
    Ok(None)
}
