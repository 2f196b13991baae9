//! The `business2api` binary: command line, configuration, start-up messages. Everything else
//! lives in the library (see `lib.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use business2api::auth::KeySource;
use business2api::cli_accounts::{self, AccountsCommand};
use business2api::config::{LoadedConfig, Mode, Settings};
use business2api::reload::{ConfigSource, Environment};
use business2api::startup::{Application, StartupError};
use business2api::telemetry;
use business2api::telemetry::printable;
use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// A gateway that lets OpenAI, Anthropic and Gemini clients use Gemini Business through a pool
/// of accounts you own.
#[derive(Debug, Parser)]
#[command(name = "business2api", version, propagate_version = true)]
struct Cli {
    /// Configuration file (JSON). The default path missing means "all defaults" (see
    /// config/README.md); a path given with --config or BUSINESS2API_CONFIG must exist.
    #[arg(
        long,
        short = 'c',
        global = true,
        default_value = "config/config.json",
        env = "BUSINESS2API_CONFIG"
    )]
    config: PathBuf,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default when no subcommand is given). Environment overrides:
    /// LISTEN_ADDR, DATA_DIR, PROXY, CONFIG_ID, API_KEYS (comma-separated, replaces),
    /// API_KEY (appends), ADMIN_KEYS (comma-separated, replaces), ADMIN_KEY (appends);
    /// RUST_LOG sets the log filter.
    Serve {
        /// Do not watch the configuration file; reload only with POST /admin/reload-config.
        #[arg(long)]
        no_watch: bool,
    },
    /// Try the gateway without a Google account: starts it with a simulated Gemini Business
    /// upstream in-process and one demo account, in a temporary data dir, and prints a curl
    /// line that streams an answer. Nothing leaves this machine.
    #[cfg(feature = "demo")]
    Demo {
        /// Address the gateway listens on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        /// Delay between the simulated upstream's answer pieces, in milliseconds.
        #[arg(long, default_value_t = 60)]
        pace_ms: u64,
    },
    /// Import, export or list the stored accounts without starting the gateway. Reads the
    /// same configuration and environment as `serve` and opens the same database
    /// (`<data_dir>/business2api.redb`), so the gateway must not be running.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// The admin panel's login, from the console.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Set (or replace) the admin panel password: reads it from stdin (one line; never from
    /// the command line, where other users could see it), stores its argon2id hash in
    /// <data_dir>/admin_password (mode 0600) and voids the setup token. A running gateway uses
    /// it at the next login. Example: `read -rs PW && printf '%s\n' "$PW" | business2api admin
    /// set-password`.
    SetPassword,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    // Given by the operator (command line or environment), as opposed to the default path.
    let explicit = matches!(
        matches.value_source("config"),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Before anything is created (data dir, socket): a mistyped path must not start a gateway
    // with every default, listening on every interface.
    if let Err(message) = check_config_path(&cli.config, explicit) {
        eprintln!("business2api: {message}");
        return ExitCode::from(2);
    }
    match cli.command.unwrap_or(Command::Serve { no_watch: false }) {
        Command::Serve { no_watch } => {
            actix_web::rt::System::new().block_on(serve(cli.config, !no_watch))
        }
        #[cfg(feature = "demo")]
        Command::Demo { listen, pace_ms } => {
            actix_web::rt::System::new().block_on(demo(listen, pace_ms))
        }
        Command::Accounts { command } => accounts(&cli.config, &command),
        Command::Admin {
            command: AdminCommand::SetPassword,
        } => set_password(&cli.config),
    }
}

/// The configuration path is usable: not a directory, and — when the operator named it — a
/// file that exists. Only the implicit default path may be missing (then every key takes its
/// default).
fn check_config_path(path: &Path, explicit: bool) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(format!(
            "the configuration path {} is a directory, not a JSON file",
            path.display()
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "the configuration file {} does not exist (given with --config or \
             BUSINESS2API_CONFIG); nothing was started. Check the path, or leave the option out \
             to run with the defaults",
            path.display()
        )),
        // Unreadable for another reason: the loader reports it with the path.
        Err(_) => Ok(()),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The configuration file plus the environment, or exit code 2 after printing every error.
fn load_config(path: &Path) -> Result<LoadedConfig, ExitCode> {
    load_config_with(path, &env)
}

fn load_config_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ExitCode> {
    Settings::load(path, env).map_err(|errors| {
        eprintln!(
            "business2api: {} has {} configuration error(s):\n{errors}",
            path.display(),
            errors.0.len()
        );
        ExitCode::from(2)
    })
}

async fn serve(path: PathBuf, watch: bool) -> ExitCode {
    // The environment as it is now: every reload applies the same overrides again.
    let environment = Environment::of_process();
    let loaded = match load_config_with(&path, &|name| environment.get(name)) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    telemetry::init(loaded.settings.debug);
    match &loaded.source {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!(config = %path.display(), "no configuration file; using defaults"),
    }
    for warning in &loaded.warnings {
        tracing::warn!("config: {warning}");
    }
    if loaded.settings.mode() == Mode::Client {
        return run_worker(&loaded.settings).await;
    }
    let source = ConfigSource {
        path,
        env: environment,
        watch,
    };
    run(loaded.settings, Some(source), None).await
}

/// Client mode: the worker, until SIGTERM or Ctrl-C has drained it.
async fn run_worker(settings: &Settings) -> ExitCode {
    match business2api::client_mode::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("business2api: cannot run the worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn accounts(path: &Path, command: &AccountsCommand) -> ExitCode {
    let loaded = match load_config(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    for warning in &loaded.warnings {
        eprintln!("business2api: config: {warning}");
    }
    let code = cli_accounts::run(
        &loaded.settings,
        command,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code)
}

/// `business2api admin set-password`: the password from stdin, its hash into the data dir.
fn set_password(path: &Path) -> ExitCode {
    use std::io::{BufRead as _, IsTerminal as _};
    let loaded = match load_config(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let read = |prompt: &str| -> Option<String> {
        if interactive {
            eprint!("{prompt}");
        }
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(
                line.strip_suffix('\n')
                    .map(|l| l.strip_suffix('\r').unwrap_or(l))
                    .unwrap_or(&line)
                    .to_owned(),
            ),
        }
    };
    let Some(password) = read("New admin password (at least 10 characters; input is echoed): ")
    else {
        eprintln!("business2api: no password on stdin");
        return ExitCode::from(2);
    };
    if interactive && read("Again: ").as_deref() != Some(password.as_str()) {
        eprintln!("business2api: the passwords differ; nothing was changed");
        return ExitCode::from(2);
    }
    let data_dir = &loaded.settings.data_dir;
    if let Err(e) = std::fs::create_dir_all(data_dir) {
        eprintln!("business2api: cannot create {}: {e}", data_dir.display());
        return ExitCode::FAILURE;
    }
    match business2api::admin::panel::password::store(data_dir, &password) {
        Ok(()) => {
            println!(
                "business2api: the admin password was stored (argon2id hash) in {}; log in at \
                 /admin/panel",
                business2api::admin::panel::password::path(data_dir).display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("business2api: {e}; nothing was changed");
            ExitCode::from(2)
        }
    }
}

/// Builds and runs the application, printing what the operator needs on stdout.
async fn run(settings: Settings, source: Option<ConfigSource>, banner: Option<String>) -> ExitCode {
    let app = match Application::build_with_source(settings, source).await {
        Ok(app) => app,
        Err(e) => {
            report_startup_error(&e);
            return ExitCode::FAILURE;
        }
    };
    let report = app.report();
    for r in report.import.rejected.iter().chain(&report.unusable) {
        println!(
            "business2api: account {} not used: {}",
            printable(&r.name),
            printable(&r.reason)
        );
    }
    let addr = app.address();
    let shown = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    if report.accounts == 0 {
        println!(
            "The pool is empty, so requests will be answered 503 until accounts arrive: {}.",
            business2api::error::EMPTY_POOL
                .trim_start_matches("the gateway has no upstream accounts: ")
        );
    }
    println!(
        "business2api listening on http://{addr} ({} account(s) in rotation)",
        report.accounts
    );
    if let Some(banner) = banner {
        println!("{banner}");
    }
    match &report.keys {
        KeySource::NewlyGenerated(path, key) => {
            println!(
                "\nNo API key was configured, so one was generated and stored in {} (mode 0600).\n\
                 It is shown only this once:\n\n    {}\n\nTry it:\n\n    curl -N http://{shown}/v1/chat/completions \\\n      \
                 -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' \\\n      \
                 -d '{{\"model\":\"gemini-2.5-flash\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'\n",
                path.display(),
                key.expose(),
                key.expose()
            );
        }
        KeySource::StoredGenerated(path) => {
            println!(
                "business2api: using the generated API key stored in {}",
                path.display()
            );
        }
        KeySource::Configured | KeySource::Unauthenticated => {}
    }
    if let Some(token) = &report.admin_setup_token {
        println!(
            "\nNo admin password is set. To set one, open http://{shown}/admin/panel and enter \
             this one-time setup token\n(shown only this once; valid until a password is set):\n\n    \
             {}\n\nor set it from the console: business2api admin set-password\n",
            token.expose()
        );
    }
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("business2api: the server stopped with an error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report_startup_error(e: &StartupError) {
    eprintln!("business2api: cannot start: {e}");
}

#[cfg(feature = "demo")]
async fn demo(listen: SocketAddr, pace_ms: u64) -> ExitCode {
    use upstream_sim::{SimAccount, SimOptions, Simulator};

    // Only warnings and errors: the banner on stdout is what a newcomer reads.
    telemetry::init_quiet();
    let options = SimOptions {
        pacing: std::time::Duration::from_millis(pace_ms),
        ..SimOptions::default()
    };
    let sim = match Simulator::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), options).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("business2api demo: cannot start the simulated upstream: {e}");
            return ExitCode::FAILURE;
        }
    };
    let account = SimAccount::demo(0);
    sim.add_account(account.clone());
    let dir = match tempfile::Builder::new()
        .prefix("business2api-demo-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("business2api demo: cannot create a temporary data dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let file = dir.path().join(format!("{}.json", account.email));
    let written = serde_json::to_vec_pretty(&account.account_file_json())
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&file, bytes));
    if let Err(e) = written {
        eprintln!("business2api demo: cannot write the demo account: {e}");
        return ExitCode::FAILURE;
    }
    let config = serde_json::json!({
        "listen_addr": listen.to_string(),
        "data_dir": dir.path(),
        "gemini_business": { "auth_base_url": sim.base_url(), "api_base_url": sim.base_url() },
    });
    let mut config = config;
    if listen.port() != 0 {
        // Links to generated media point at the demo itself (no warning about a missing one).
        let host = if listen.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], listen.port()))
        } else {
            listen
        };
        config["media"] = serde_json::json!({ "public_base_url": format!("http://{host}") });
    }
    let settings = match Settings::from_json_str(&config.to_string(), &|_| None) {
        Ok(loaded) => loaded.settings,
        Err(errors) => {
            eprintln!("business2api demo: internal configuration error:\n{errors}");
            return ExitCode::FAILURE;
        }
    };
    let banner = format!(
        "Demo mode: the Gemini Business upstream is simulated at {} with one demo account; \
         data lives in {} and is removed on exit.",
        sim.base_url(),
        dir.path().display()
    );
    let code = run(settings, None, Some(banner)).await;
    sim.stop();
    drop(dir);
    code
}
