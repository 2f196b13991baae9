//! One real browser at a time across test processes.

/// Real-browser tests (the worker's login tests, local mode's and server mode's re-login tests)
/// run one at a time, across test processes too: nextest runs each test in its own process, the
/// CI box has two cores, and some tests check that no browser is left over. Holds an exclusive
/// lock on `b2a-worker-real-browser.lock` in the temporary directory until the file is dropped.
///
/// # Errors
/// When the lock file cannot be opened or locked.
pub fn one_browser_at_a_time() -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("b2a-worker-real-browser.lock"))?;
    file.lock()?;
    Ok(file)
}
