//! The `keel` command line.

mod check;
mod ctl;
mod migrate;
mod progress;
mod run;
mod signals;
mod sim;
mod task;
mod watchdog;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_PATH};
use crate::exit_code;
use crate::logging::{self, LogFormat};
use crate::runtime::Runtime;
use crate::tree::TaskRequest;

/// Keel: a supervised runtime for market-data services.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about)]
pub struct Cli {
    /// Configuration file [default: conf/keel.toml if it exists, else the
    /// defaults in code].
    #[arg(long, global = true, env = "KEEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log line format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// What `keel` can do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM or SIGINT (a second SIGINT skips the drain).
    Run,
    /// Run one task once under the same tree; the exit code is its result
    /// (0 ok, 1 failed, 75 interrupted, 70 the supervisor gave up, 78 bad
    /// configuration, 64 bad arguments).
    #[command(subcommand)]
    Task(TaskRequest),
    /// Validate the configuration and print it as it takes effect, secrets redacted.
    Check,
    /// Apply pending schema migrations to PostgreSQL and exit (0 ok, 1 failed).
    Migrate,
    /// Run the local Deribit-compatible exchange (settings from `[sim]`, flags win).
    Sim(sim::SimArgs),
    /// Inspect and control a running daemon through its admin endpoint.
    Ctl(ctl::CtlArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() {
                exit_code::USAGE
            } else {
                exit_code::OK // --help, --version
            };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    logging::init(cli.log_format);
    let config = match load_config(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(exit_code::BAD_CONFIG);
        }
    };
    keel_core::logs::set_repeats_per_minute(config.log.repeats_per_minute);
    if let Command::Check = cli.command {
        return ExitCode::from(check::run(&config));
    }
    let code = on_runtime(|| async {
        match cli.command {
            Command::Run => run::run(&config, Runtime::from_config(&config)).await,
            Command::Task(request) => task::run(&config, &request).await,
            Command::Migrate => migrate::run(&config).await,
            Command::Sim(args) => sim::run(&config.sim, args).await,
            Command::Ctl(args) => ctl::run(&config, args).await,
            Command::Check => exit_code::OK,
        }
    });
    ExitCode::from(code)
}

/// The configuration `--config` (or `KEEL_CONFIG`) names; without either,
/// `conf/keel.toml` when there is one, else the defaults in code (said in the
/// log). The environment's `KEEL__*` overrides apply in every case.
fn load_config(path: Option<&std::path::Path>) -> Result<Config, crate::config::ConfigError> {
    if let Some(path) = path {
        return Config::load(path);
    }
    let default = std::path::Path::new(DEFAULT_PATH);
    if default.exists() {
        return Config::load(default);
    }
    tracing::info!(
        "No configuration file ({DEFAULT_PATH} not found, --config and KEEL_CONFIG not given): using the defaults in code."
    );
    Config::load_defaults()
}

/// Runs `tree` the way `keel run` runs the tree of its configuration (signals,
/// the admin endpoint, the shutdown deadline and its watchdog) on an async
/// runtime of its own, and returns the process exit code. Embedders and tests
/// use it to run a tree of their own as a daemon.
pub fn run_daemon(config: &Config, tree: impl FnOnce() -> Runtime) -> u8 {
    on_runtime(|| async { run::run(config, tree()).await })
}

/// Blocks on `work` on a fresh multi-threaded runtime, then shuts the runtime
/// down without waiting on tasks that never yield.
fn on_runtime<F, Fut>(work: F) -> u8
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = u8>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "Cannot start the async runtime.");
            return exit_code::SUPERVISOR_GAVE_UP;
        }
    };
    let code = runtime.block_on(work());
    // Not a plain drop, which waits for every task: one that never yields
    // would hold the process forever.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}
