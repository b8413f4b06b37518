//! Log output: plain lines for journald by default (it adds time and unit),
//! timestamps when run by hand in a terminal, JSON on request.
//! `RUST_LOG` overrides the configured level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

///
/// `level` is a tracing filter; the embedded broker's own logging is off
/// (its connection-teardown errors are noise to an operator).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},rumqttd=off")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text if under_journald || !terminal => builder.without_time().with_ansi(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
