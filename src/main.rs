//! Command line: parse, load, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use lineguard::config;

#[derive(Parser)]
#[command(
    name = "lineguard",
    version,
    about = "MQTT telemetry -> sliding windows -> ONNX MLP -> anomaly and quality scores"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate the configuration (and its models) and print the effective settings, secrets masked.
    CheckConfig {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Load a model and its card, print what lineguard feeds and reads, run and time a test inference.
    CheckModel {
        model: PathBuf,
        /// The card, if not MODEL.toml beside the model.
        #[arg(long)]
        card: Option<PathBuf>,
    },
    /// Zero set-up demo: embedded broker, simulated line with faults, the daemon, live scores.
    Demo(lineguard::tools::demo::DemoArgs),
    /// Publish a simulated line (with faults) to a real broker.
    Simulate(lineguard::tools::sim::SimulateArgs),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            lineguard::daemon::serve(config::load(&config, std::env::vars())?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            print!("{}", lineguard::tools::check_config::check(&config, std::env::vars())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckModel { model, card } => {
            print!("{}", lineguard::model::check::check(&model, card.as_deref())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => lineguard::tools::demo::main(args),
        Command::Simulate(args) => {
            lineguard::tools::sim::main(args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
