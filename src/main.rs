//! Command line: parse, load, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use lineguard::config::{self, LogFormat};

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

/// One async thread: the async side only moves messages between the broker
/// connection and the pipeline threads (where the CPU work is), and doing
/// that within one thread avoids a kernel context switch per hand-off.
/// Pipeline workers drive their waits through its handle; the main thread's
/// `block_on` drives the timers and I/O.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            let settings = config::load(&config, std::env::vars())?;
            lineguard::ops::logging::init(settings.raw.log.format, &settings.raw.log.level);
            let rt = runtime()?;
            let result = rt.block_on(async {
                // Before anything slow: a signal must never find its default action.
                let signals = lineguard::ops::signals::install().context("cannot install signal handlers")?;
                lineguard::daemon::run(settings, signals.stop, Some(signals.hangup)).await
            });
            // A model still loading on a blocking thread need not be waited for.
            rt.shutdown_timeout(std::time::Duration::from_millis(100));
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            let settings = config::load(&config, std::env::vars())?;
            lineguard::durable::store::check_writable(&settings.raw.state.dir)
                .with_context(|| format!("{}: `state.dir`", settings.path.display()))?;
            println!("# {}: valid\n", settings.path.display());
            print!("{}", settings.display_masked());
            let models = lineguard::daemon::load_models(&settings)?;
            println!();
            println!("# mqtt password: {}", settings.password_source);
            println!("# state.dir {}: writable", settings.raw.state.dir.display());
            for (p, m) in settings.pipelines.iter().zip(&models) {
                println!(
                    "# pipeline `{}`: subscribes `{}`, publishes `{}`, model {} v{} ({} x {} features, sha256 {})",
                    p.name,
                    p.filters().join("` and `"),
                    p.output_display(settings.sparkplug.as_ref().map(|s| &s.node)),
                    m.card.name,
                    m.card.version,
                    m.card.window,
                    m.card.features.len(),
                    &m.sha256[..16]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckModel { model, card } => {
            print!("{}", lineguard::model::check::check(&model, card.as_deref())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            lineguard::ops::logging::init(LogFormat::Text, "warn");
            runtime()?.block_on(lineguard::tools::demo::run(args))
        }
        Command::Simulate(args) => {
            lineguard::ops::logging::init(LogFormat::Text, "info");
            runtime()?.block_on(lineguard::tools::sim::simulate(args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
