//! Log output: plain lines for journald by default (it adds time and unit),
//! timestamps when run by hand in a terminal, JSON on request.
//! `RUST_LOG` overrides the configured level.
//!
//! When stderr is the journal (systemd sets `JOURNAL_STREAM` to the device
//! and inode of the stream it connected to stderr), every line carries its
//! priority, so that `journalctl -p warning` finds the warnings: ERROR 3,
//! WARN 4, INFO 6, DEBUG and TRACE 7. The journal's native protocol (through
//! `tracing-journald`) also stores each event's fields as journal fields
//! (`PIPELINE=line`, `REASON=bad_shape`, ...); where its socket cannot be
//! reached, the lines on stderr carry the priority as sd-daemon(3)'s `<N>`
//! prefix, which journald's stream reader understands.
//!
//! A dependency's lines (rumqttc warns once per refused publish, for one)
//! reach the output through the same rate limit as lineguard's own
//! ([`DependencyLimit`]): the first of each at once, then at most one per
//! [`LOG_EVERY`](crate::ops::events::LOG_EVERY); lineguard's own line for
//! the same fault says how many.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::ops::events::RateLimit;

/// `log.format`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Plain lines without timestamps or colour: journald adds both.
    #[default]
    Text,
    Json,
}

/// `[log]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter (`RUST_LOG` wins).
    pub level: String,
}

/// Install the process's log subscriber (once; later calls do nothing).
///
/// `level` is a tracing filter; the embedded broker's own logging is off
/// (its connection-teardown errors are noise to an operator).
pub(crate) fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},rumqttd=off")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref());
    let lines = || tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => lines().json().flatten_event(true).boxed(),
        LogFormat::Text if journal => match journald() {
            Some(layer) => layer.boxed(),
            None => {
                lines().event_format(SyslogPrefix(Format::default().without_time().with_ansi(false))).boxed()
            }
        },
        LogFormat::Text if !std::io::stderr().is_terminal() => {
            lines().without_time().with_ansi(false).boxed()
        }
        LogFormat::Text => lines().boxed(),
    };
    let _ =
        tracing_subscriber::registry().with(output).with(DependencyLimit::default()).with(filter).try_init();
}

/// Holds a dependency's lines to lineguard's rate: per line of its code,
/// the first at once, then at most one per [`LOG_EVERY`](crate::ops::events::LOG_EVERY).
#[derive(Debug, Default)]
pub(crate) struct DependencyLimit {
    seen: Mutex<RateLimit<String>>,
}

impl<S: Subscriber> Layer<S> for DependencyLimit {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        // A `log` record (rumqttc's) shows its own target and line once normalized.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if meta.target().starts_with(env!("CARGO_CRATE_NAME")) {
            return true;
        }
        let key = format!("{}:{}:{}", meta.target(), meta.file().unwrap_or(""), meta.line().unwrap_or(0));
        self.seen.lock().map(|mut s| s.allow(key).is_some()).unwrap_or(true)
    }
}

/// The journal's native protocol, with the priorities above and field
/// names as the events spell them (upper-cased by the journal).
fn journald() -> Option<tracing_journald::Layer> {
    use tracing_journald::{Priority, PriorityMappings};
    let mappings = PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    };
    let layer = tracing_journald::layer().ok()?;
    Some(layer.with_field_prefix(None).with_priority_mappings(mappings))
}

/// Whether `journal_stream` (`JOURNAL_STREAM`, "device:inode") names the
/// stream on our stderr: a child that inherited the variable but writes
/// elsewhere (a pipe, a file) must not prefix its lines.
pub(crate) fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else { return false };
    std::fs::File::from(fd).metadata().is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// sd-daemon(3) priority of a level.
pub(crate) fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A line format that starts each line with `<N>`, the priority.
struct SyslogPrefix<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("garbage")));
        assert!(!stderr_is_journal(Some("1:x")));
        let m =
            std::fs::File::from(std::io::stderr().as_fd().try_clone_to_owned().unwrap()).metadata().unwrap();
        assert!(stderr_is_journal(Some(&format!("{}:{}", m.dev(), m.ino()))));
        assert!(!stderr_is_journal(Some(&format!("{}:{}", m.dev(), m.ino() + 1))));
    }

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(
            [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG].map(|l| priority(&l)),
            [3, 4, 6, 7]
        );
    }
}
