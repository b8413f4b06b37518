//! The command line: its definition (also read by the man page and the
//! shell completions the package ships) and what each command runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use crate::config;

#[derive(Parser)]
#[command(
    name = "lineguard",
    version,
    about = "MQTT telemetry -> sliding windows -> ONNX MLP -> anomaly and quality scores",
    long_about = "lineguard subscribes to equipment telemetry over MQTT, keeps a sliding window of \
                  recent samples per machine, runs full windows through an ONNX-exported MLP and \
                  publishes anomaly and quality scores back over MQTT (JSON or Sparkplug B).",
    after_help = "Files: /etc/lineguard/lineguard.toml (configuration), /var/lib/lineguard (state), \
                  /usr/share/lineguard/models (the shipped model). Documentation: \
                  /usr/share/doc/lineguard/README.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// The configuration file (TOML); LINEGUARD_* environment variables override it.
        #[arg(long, value_name = "PATH", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate the configuration (and its models) and print the effective settings, secrets masked.
    CheckConfig {
        /// The configuration file (TOML); LINEGUARD_* environment variables override it.
        #[arg(long, value_name = "PATH", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Load a model and its card, print what lineguard feeds and reads, run and time a test inference.
    CheckModel {
        /// The ONNX model file.
        model: PathBuf,
        /// The card, if not MODEL.toml beside the model.
        #[arg(long, value_name = "PATH")]
        card: Option<PathBuf>,
    },
    /// Zero set-up demo: embedded broker, simulated line with faults, the daemon, live scores.
    Demo(crate::tools::demo::DemoArgs),
    /// Publish a simulated line (with faults) to a real broker.
    Simulate(crate::tools::sim::SimulateArgs),
    /// Record every pipeline's telemetry, as it arrives, to a JSON Lines file.
    Record(crate::tools::record::RecordArgs),
    /// Score a recording or a CSV table offline, exactly as the daemon would, and write what it would publish.
    Replay(crate::tools::replay::ReplayArgs),
    /// Write the man pages and shell completions (for packaging).
    #[command(hide = true)]
    Assets {
        /// Where to write `man/*.1` and `completions/{bash,zsh,fish}`.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Parse the process's arguments and run the command.
pub fn main() -> ExitCode {
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
            crate::daemon::serve(config::load(&config, std::env::vars())?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            print!("{}", crate::tools::check_config::check(&config, std::env::vars())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckModel { model, card } => {
            print!("{}", crate::model::check::check(&model, card.as_deref())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => crate::tools::demo::main(args),
        Command::Simulate(args) => {
            crate::tools::sim::main(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Record(args) => crate::tools::record::main(args),
        Command::Replay(args) => crate::tools::replay::main(args),
        Command::Assets { out } => {
            write_assets(&out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `lineguard.1` and one page per visible command (`lineguard-run.1`, ...),
/// and completions for bash, zsh and fish.
pub fn write_assets(out: &Path) -> anyhow::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("cannot create {}", completions.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man).context("cannot write the man pages")?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "lineguard", &completions)
            .with_context(|| format!("cannot write the {shell} completion"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument an operator can see says what it is.
    #[test]
    fn every_option_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "lineguard", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
        Cli::command().debug_assert();
    }

    /// The package ships `deploy/man` and `deploy/completions`: they must be
    /// what the command line says now.
    #[test]
    fn the_shipped_man_pages_and_completions_are_current() {
        let dir = tempfile::tempdir().unwrap();
        write_assets(dir.path()).unwrap();
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        for sub in ["man", "completions"] {
            let mut generated: Vec<String> = std::fs::read_dir(dir.path().join(sub))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            generated.sort();
            let mut shipped: Vec<String> = std::fs::read_dir(deploy.join(sub))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            shipped.sort();
            assert_eq!(generated, shipped, "deploy/{sub}: run `cargo run -- assets --out deploy`");
            for f in generated {
                let now = std::fs::read(dir.path().join(sub).join(&f)).unwrap();
                let old = std::fs::read(deploy.join(sub).join(&f)).unwrap();
                assert!(now == old, "deploy/{sub}/{f} is stale: run `cargo run -- assets --out deploy`");
            }
        }
    }

    #[test]
    fn assets_are_a_man_page_per_command_and_three_completions() {
        let dir = tempfile::tempdir().unwrap();
        write_assets(dir.path()).unwrap();
        let page = std::fs::read_to_string(dir.path().join("man/lineguard.1")).unwrap();
        assert!(page.contains(".TH lineguard 1") && page.contains("check\\-config"), "{page}");
        let run = std::fs::read_to_string(dir.path().join("man/lineguard-run.1")).unwrap();
        assert!(run.contains("The configuration file"), "{run}");
        assert!(!dir.path().join("man/lineguard-assets.1").exists(), "the hidden command has no page");
        for f in ["lineguard.bash", "_lineguard", "lineguard.fish"] {
            let text = std::fs::read_to_string(dir.path().join("completions").join(f)).unwrap();
            assert!(text.contains("check-config"), "{f}: {text}");
        }
    }
}
