//! The catalogue of what `/metrics` exports: every family's name, type,
//! labels and help text (rendered as `# HELP`), `lineguard_build_info`,
//! and the process's own metrics (resident memory, CPU, open files, start
//! time) from `metrics-process`, read at every scrape. The series
//! themselves are registered, at 0, by the event handles that count them
//! (see [`events`](crate::ops::events)).
//!
//! The README's metric table lists the same families; a test compares it
//! with a live `/metrics`.

use std::sync::LazyLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, gauge};

/// Every metric lineguard exports, by name.
pub mod names {
    pub const BUILD_INFO: &str = "lineguard_build_info";
    pub const MESSAGES: &str = "lineguard_messages_total";
    pub const MESSAGE_BYTES: &str = "lineguard_message_bytes_total";
    pub const REJECTED: &str = "lineguard_rejected_total";
    pub const DUPLICATES: &str = "lineguard_duplicates_total";
    pub const WINDOWS_SCORED: &str = "lineguard_windows_scored_total";
    pub const WINDOWS_FAILED: &str = "lineguard_windows_failed_total";
    pub const SCORES: &str = "lineguard_scores_total";
    pub const BATCH_SIZE: &str = "lineguard_batch_size";
    pub const INFERENCE_SECONDS: &str = "lineguard_inference_seconds";
    pub const INFERENCE_ERRORS: &str = "lineguard_inference_errors_total";
    pub const DEVICES: &str = "lineguard_devices";
    pub const DEVICES_EVICTED: &str = "lineguard_devices_evicted_total";
    pub const DEAD_LETTERS_DROPPED: &str = "lineguard_dead_letters_dropped_total";
    pub const COMMIT_SECONDS: &str = "lineguard_commit_seconds";
    pub const COMMIT_ERRORS: &str = "lineguard_commit_errors_total";
    pub const SCORES_PUBLISHED: &str = "lineguard_scores_published_total";
    pub const ALARMS_PUBLISHED: &str = "lineguard_alarms_published_total";
    pub const PUBLISHES_REFUSED: &str = "lineguard_publishes_refused_total";
    pub const SUBSCRIPTIONS_REFUSED: &str = "lineguard_subscriptions_refused_total";
    pub const OUTBOX_SCORES: &str = "lineguard_outbox_scores";
    pub const OUTBOX_BYTES: &str = "lineguard_outbox_bytes";
    pub const OUTBOX_DROPPED: &str = "lineguard_outbox_dropped_total";
    pub const CONNECTION_UP: &str = "lineguard_connection_up";
    pub const CONNECTION_RECONNECTS: &str = "lineguard_connection_reconnects_total";
    pub const MODEL_INFO: &str = "lineguard_model_info";
    pub const MODEL_RELOADS: &str = "lineguard_model_reloads_total";
    pub const STATE_DROPPED: &str = "lineguard_state_dropped_total";
    pub const STATE_STORE_DISCARDED: &str = "lineguard_state_store_discarded_total";
    pub const UNROUTABLE: &str = "lineguard_unroutable_total";
    pub const WINDOW_RESETS: &str = "lineguard_window_resets_total";
    pub const FEATURE_MEAN_Z: &str = "lineguard_feature_mean_z";
    pub const FEATURE_STD_Z: &str = "lineguard_feature_std_z";
    pub const FEATURE_OUT_OF_RANGE: &str = "lineguard_feature_out_of_range_total";
    pub const SHADOW_WINDOWS: &str = "lineguard_shadow_windows_total";
    pub const SHADOW_DISAGREEMENTS: &str = "lineguard_shadow_state_disagreements_total";
    pub const SHADOW_ABS_DIFF: &str = "lineguard_shadow_abs_diff";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One exported family.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    /// Its labels, comma-separated (empty: none).
    pub labels: &'static str,
    pub help: &'static str,
}

const fn family(name: &'static str, kind: Kind, labels: &'static str, help: &'static str) -> Family {
    Family { name, kind, labels, help }
}

use Kind::{Counter, Gauge, Histogram};

/// lineguard's own families, in the README's order.
pub const FAMILIES: &[Family] = &[
    family(names::BUILD_INFO, Gauge, "version,target", "Always 1; its labels say which build runs."),
    family(
        names::CONNECTION_UP,
        Gauge,
        "connection",
        "1 while the broker connection (telemetry, scores, sparkplug) is up, 0 while it is down.",
    ),
    family(
        names::CONNECTION_RECONNECTS,
        Counter,
        "connection",
        "Broker connections lost or refused, by connection (each is retried with backoff).",
    ),
    family(names::MESSAGES, Counter, "pipeline", "Telemetry messages received."),
    family(names::MESSAGE_BYTES, Counter, "pipeline", "Bytes of telemetry payload received."),
    family(
        names::REJECTED,
        Counter,
        "pipeline,reason",
        "Samples or messages refused, by reason; none is scored.",
    ),
    family(names::DUPLICATES, Counter, "pipeline", "Samples already applied that came again (redeliveries)."),
    family(
        names::WINDOW_RESETS,
        Counter,
        "pipeline,reason",
        "Device windows started again: after a gap (max_gap_ms) or a stale grid point (sampling clock).",
    ),
    family(names::DEVICES, Gauge, "pipeline", "Devices with a window in memory."),
    family(
        names::DEVICES_EVICTED,
        Counter,
        "pipeline,reason",
        "Devices whose windows were dropped: idle, or the device cap reached.",
    ),
    family(names::WINDOWS_SCORED, Counter, "pipeline", "Windows run through the model."),
    family(
        names::WINDOWS_FAILED,
        Counter,
        "pipeline",
        "Windows not scored because the model run failed or gave NaN or infinity.",
    ),
    family(names::INFERENCE_ERRORS, Counter, "pipeline", "Model runs that failed or gave NaN or infinity."),
    family(names::SCORES, Counter, "pipeline,state", "Scored windows by their state (ok, warn, alarm)."),
    family(names::BATCH_SIZE, Histogram, "pipeline", "Windows per model run."),
    family(names::INFERENCE_SECONDS, Histogram, "pipeline", "Time of one model run, in seconds."),
    family(
        names::COMMIT_SECONDS,
        Histogram,
        "pipeline",
        "Time of one group commit of the state store (with fsync).",
    ),
    family(
        names::COMMIT_ERRORS,
        Counter,
        "pipeline",
        "Group commits the state store refused (retried every second).",
    ),
    family(
        names::SCORES_PUBLISHED,
        Counter,
        "",
        "Score messages (JSON or Sparkplug) the broker acknowledged.",
    ),
    family(names::ALARMS_PUBLISHED, Counter, "", "Alarm messages (on alarm_topic) the broker acknowledged."),
    family(
        names::PUBLISHES_REFUSED,
        Counter,
        "reason",
        "Publishes the broker refused (MQTT 5 reason code); those messages are lost.",
    ),
    family(
        names::SUBSCRIPTIONS_REFUSED,
        Counter,
        "",
        "Subscriptions the broker refused (nothing arrives on them).",
    ),
    family(names::OUTBOX_SCORES, Gauge, "", "Messages in the outbox, not yet acknowledged by the broker."),
    family(names::OUTBOX_BYTES, Gauge, "", "Bytes in the outbox."),
    family(
        names::OUTBOX_DROPPED,
        Counter,
        "reason",
        "Unpublished messages dropped because the outbox was full (bytes) or too old (age).",
    ),
    family(
        names::DEAD_LETTERS_DROPPED,
        Counter,
        "",
        "Dead letters not published because their queue was full.",
    ),
    family(
        names::MODEL_INFO,
        Gauge,
        "pipeline,model,version,sha256",
        "1 for the model in service, 0 for one retired by a reload.",
    ),
    family(names::MODEL_RELOADS, Counter, "pipeline,result", "Model reloads, by result (ok, refused)."),
    family(
        names::STATE_DROPPED,
        Counter,
        "kind,reason",
        "Stored windows or outbox entries dropped at start-up because they could not be trusted.",
    ),
    family(
        names::STATE_STORE_DISCARDED,
        Counter,
        "reason",
        "Times the state store was set aside or rolled back, by reason.",
    ),
    family(names::UNROUTABLE, Counter, "reason", "Messages no pipeline could take (e.g. a topic not UTF-8)."),
    family(
        names::FEATURE_MEAN_Z,
        Gauge,
        "pipeline,feature",
        "Exponentially weighted mean of a feature's normalized values over all devices (training: 0; NaN before any).",
    ),
    family(
        names::FEATURE_STD_Z,
        Gauge,
        "pipeline,feature",
        "Exponentially weighted standard deviation of a feature's normalized values (training: 1; NaN before any).",
    ),
    family(
        names::FEATURE_OUT_OF_RANGE,
        Counter,
        "pipeline,feature",
        "Values outside the card's [range] (still scored).",
    ),
    family(
        names::SHADOW_WINDOWS,
        Counter,
        "pipeline",
        "With shadow_model: windows the shadow model scored (published on shadow_topic).",
    ),
    family(
        names::SHADOW_DISAGREEMENTS,
        Counter,
        "pipeline",
        "With shadow_model: windows whose state by the shadow differs from the live model's.",
    ),
    family(
        names::SHADOW_ABS_DIFF,
        Histogram,
        "pipeline,score",
        "With shadow_model: |shadow - live| per score the two share.",
    ),
];

/// The process families `metrics-process` exports on Linux.
pub const PROCESS_FAMILIES: &[&str] = &[
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

static PROCESS: LazyLock<metrics_process::Collector> = LazyLock::new(metrics_process::Collector::default);

/// Describe every family, and say which build runs. Call once the
/// recorder is installed.
pub fn describe() {
    for f in FAMILIES {
        match f.kind {
            Kind::Counter => describe_counter!(f.name, f.help),
            Kind::Gauge => describe_gauge!(f.name, f.help),
            Kind::Histogram => describe_histogram!(f.name, f.help),
        }
    }
    PROCESS.describe();
    PROCESS.collect();
    gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "target" => target()).set(1.0);
}

/// Read the process's own metrics (at every scrape).
pub fn collect_process() {
    PROCESS.collect();
}

/// `x86_64-linux`, `aarch64-linux`, ...
fn target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}
