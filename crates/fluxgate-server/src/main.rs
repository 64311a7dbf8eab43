//! The `fluxgate` binary: `serve`, `migrate`, `admin …` and `config check`.

use clap::{Parser, Subcommand};
use fluxgate_server::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: the request path allocates small, short-lived buffers on many threads, where it is
/// markedly faster than the system allocator (the floors in docs/BENCHMARKS.md use it too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fluxgate",
    version,
    about = "Self-hosted authentication and API-key platform"
)]
struct Cli {
    /// TOML configuration file (also FLUXGATE_CONFIG); FLUXGATE_* variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and portal (migrates an SQLite database by itself).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Operator tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Configuration tasks.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create the operator org and its verified owner.
    Bootstrap {
        /// The owner's email.
        #[arg(long)]
        email: String,
        /// The owner's password (8-128 characters, not a common one).
        #[arg(long)]
        password: String,
    },
    /// Make a new JWT signing key current.
    RotateSigningKey,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration, print it (secrets redacted), exit non-zero naming every bad value.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    if let Command::Config {
        command: ConfigCommand::Check,
    } = cli.command
    {
        println!("{}\n\nconfiguration OK", config.describe());
        return ExitCode::SUCCESS;
    }
    fluxgate_server::telemetry::init(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => fluxgate_server::server::serve(config).await,
            Command::Migrate => {
                let store = fluxgate_server::server::open_store(&config).await?;
                store.close().await;
                println!("migrations applied ({})", store.backend());
                Ok(())
            }
            Command::Admin {
                command: AdminCommand::Bootstrap { email, password },
            } => fluxgate_server::admin::bootstrap(&config, &email, &password).await,
            Command::Admin {
                command: AdminCommand::RotateSigningKey,
            } => fluxgate_server::admin::rotate_signing_key(&config).await,
            Command::Config { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "fluxgate failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
