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
pub(crate) mod names {
    pub(crate) const BUILD_INFO: &str = "lineguard_build_info";
    pub(crate) const MESSAGES: &str = "lineguard_messages_total";
    pub(crate) const MESSAGE_BYTES: &str = "lineguard_message_bytes_total";
    pub(crate) const REJECTED: &str = "lineguard_rejected_total";
    pub(crate) const DUPLICATES: &str = "lineguard_duplicates_total";
    pub(crate) const WINDOWS_SCORED: &str = "lineguard_windows_scored_total";
    pub(crate) const WINDOWS_FAILED: &str = "lineguard_windows_failed_total";
    pub(crate) const SCORES: &str = "lineguard_scores_total";
    pub(crate) const BATCH_SIZE: &str = "lineguard_batch_size";
    pub(crate) const INFERENCE_SECONDS: &str = "lineguard_inference_seconds";
    pub(crate) const INFERENCE_ERRORS: &str = "lineguard_inference_errors_total";
    pub(crate) const DEVICES: &str = "lineguard_devices";
    pub(crate) const DEVICES_EVICTED: &str = "lineguard_devices_evicted_total";
    pub(crate) const DEAD_LETTERS_DROPPED: &str = "lineguard_dead_letters_dropped_total";
    pub(crate) const COMMIT_SECONDS: &str = "lineguard_commit_seconds";
    pub(crate) const COMMIT_ERRORS: &str = "lineguard_commit_errors_total";
    pub(crate) const SCORES_PUBLISHED: &str = "lineguard_scores_published_total";
    pub(crate) const ALARMS_PUBLISHED: &str = "lineguard_alarms_published_total";
    pub(crate) const PUBLISHES_REFUSED: &str = "lineguard_publishes_refused_total";
    pub(crate) const SUBSCRIPTIONS_REFUSED: &str = "lineguard_subscriptions_refused_total";
    pub(crate) const SESSIONS_LOST: &str = "lineguard_sessions_lost_total";
    pub(crate) const REDUNDANCY_ACTIVE: &str = "lineguard_redundancy_active";
    pub(crate) const REDUNDANCY_TAKEOVERS: &str = "lineguard_redundancy_takeovers_total";
    pub(crate) const REDUNDANCY_REPLAYED: &str = "lineguard_redundancy_replayed_total";
    pub(crate) const OUTBOX_SCORES: &str = "lineguard_outbox_scores";
    pub(crate) const OUTBOX_BYTES: &str = "lineguard_outbox_bytes";
    pub(crate) const OUTBOX_DROPPED: &str = "lineguard_outbox_dropped_total";
    pub(crate) const CONNECTION_UP: &str = "lineguard_connection_up";
    pub(crate) const CONNECTION_RECONNECTS: &str = "lineguard_connection_reconnects_total";
    pub(crate) const MODEL_INFO: &str = "lineguard_model_info";
    pub(crate) const MODEL_RELOADS: &str = "lineguard_model_reloads_total";
    pub(crate) const STATE_DROPPED: &str = "lineguard_state_dropped_total";
    pub(crate) const STATE_STORE_DISCARDED: &str = "lineguard_state_store_discarded_total";
    pub(crate) const UNROUTABLE: &str = "lineguard_unroutable_total";
    pub(crate) const WINDOW_RESETS: &str = "lineguard_window_resets_total";
    pub(crate) const FEATURE_MEAN_Z: &str = "lineguard_feature_mean_z";
    pub(crate) const FEATURE_STD_Z: &str = "lineguard_feature_std_z";
    pub(crate) const FEATURE_OUT_OF_RANGE: &str = "lineguard_feature_out_of_range_total";
    pub(crate) const SHADOW_WINDOWS: &str = "lineguard_shadow_windows_total";
    pub(crate) const SHADOW_DISAGREEMENTS: &str = "lineguard_shadow_state_disagreements_total";
    pub(crate) const SHADOW_ABS_DIFF: &str = "lineguard_shadow_abs_diff";
    pub(crate) const ROLLUP_INDEX: &str = "lineguard_rollup_index";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported family.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family { name, kind, help }
}

use Kind::{Counter, Gauge, Histogram};

/// lineguard's own families, in the README's order.
pub(crate) const FAMILIES: &[Family] = &[
    family(names::BUILD_INFO, Gauge, "Always 1; its labels say which build runs."),
    family(names::CONNECTION_UP, Gauge, "1 while the broker connection (telemetry, scores, sparkplug) is up, 0 while it is down."),
    family(names::CONNECTION_RECONNECTS, Counter, "Broker connections lost or refused, by connection (each is retried with backoff)."),
    family(
        names::SESSIONS_LOST,
        Counter,
        "Reconnects the broker answered without our session (what was published meanwhile is gone), by connection.",
    ),
    family(
        names::REDUNDANCY_ACTIVE,
        Gauge,
        "1 while this instance publishes (always, without [redundancy]); 0 while it stands by.",
    ),
    family(names::REDUNDANCY_TAKEOVERS, Counter, "Times this instance became the active one of its pair."),
    family(
        names::REDUNDANCY_REPLAYED,
        Counter,
        "Messages a standby kept and published first when it took over.",
    ),
    family(names::MESSAGES, Counter, "Telemetry messages received."),
    family(names::MESSAGE_BYTES, Counter, "Bytes of telemetry payload received."),
    family(names::REJECTED, Counter, "Samples or messages refused, by reason; none is scored."),
    family(names::DUPLICATES, Counter, "Samples already applied that came again (redeliveries)."),
    family(
        names::WINDOW_RESETS,
        Counter,
        "Device windows started again: after a gap (max_gap_ms), a stale grid point (sampling clock), or a lost broker session.",
    ),
    family(names::DEVICES, Gauge, "Devices with a window in memory."),
    family(names::DEVICES_EVICTED, Counter, "Devices whose windows were dropped: idle, or the device cap reached."),
    family(names::WINDOWS_SCORED, Counter, "Windows run through the model."),
    family(names::WINDOWS_FAILED, Counter, "Windows not scored because the model run failed or gave NaN or infinity."),
    family(names::INFERENCE_ERRORS, Counter, "Model runs that failed or gave NaN or infinity."),
    family(names::SCORES, Counter, "Scored windows by their state (ok, warn, alarm)."),
    family(names::BATCH_SIZE, Histogram, "Windows per model run."),
    family(names::INFERENCE_SECONDS, Histogram, "Time of one model run, in seconds."),
    family(names::COMMIT_SECONDS, Histogram, "Time of one group commit of the state store (with fsync)."),
    family(names::COMMIT_ERRORS, Counter, "Group commits the state store refused (retried every second)."),
    family(names::SCORES_PUBLISHED, Counter, "Score messages (JSON or Sparkplug) the broker acknowledged."),
    family(names::ALARMS_PUBLISHED, Counter, "Alarm messages (on alarm_topic) the broker acknowledged."),
    family(names::PUBLISHES_REFUSED, Counter, "Publishes the broker refused (MQTT 5 reason code); those messages are lost."),
    family(names::SUBSCRIPTIONS_REFUSED, Counter, "Subscriptions the broker refused (nothing arrives on them)."),

    family(names::OUTBOX_SCORES, Gauge, "Messages in the outbox, not yet acknowledged by the broker."),
    family(names::OUTBOX_BYTES, Gauge, "Bytes in the outbox."),
    family(names::OUTBOX_DROPPED, Counter, "Unpublished messages dropped because the outbox was full (bytes) or too old (age)."),
    family(names::DEAD_LETTERS_DROPPED, Counter, "Dead letters not published because their queue was full."),
    family(names::MODEL_INFO, Gauge, "1 for the model in service, 0 for one retired by a reload."),
    family(names::MODEL_RELOADS, Counter, "Model reloads, by result (ok, refused)."),
    family(names::STATE_DROPPED, Counter, "Stored windows or outbox entries dropped at start-up because they could not be trusted."),
    family(names::STATE_STORE_DISCARDED, Counter, "Times the state store was set aside or rolled back, by reason."),
    family(names::UNROUTABLE, Counter, "Messages no pipeline could take (e.g. a topic not UTF-8)."),
    family(names::FEATURE_MEAN_Z, Gauge, "Exponentially weighted mean of a feature's normalized values over all devices (training: 0; NaN before any)."),
    family(names::FEATURE_STD_Z, Gauge, "Exponentially weighted standard deviation of a feature's normalized values (training: 1; NaN before any)."),
    family(names::FEATURE_OUT_OF_RANGE, Counter, "Values outside the card's [range] (still scored)."),
    family(names::SHADOW_WINDOWS, Counter, "With shadow_model: windows the shadow model scored (published on shadow_topic)."),
    family(names::SHADOW_DISAGREEMENTS, Counter, "With shadow_model: windows whose state by the shadow differs from the live model's."),
    family(names::SHADOW_ABS_DIFF, Histogram, "With shadow_model: |shadow - live| per score the two share."),
    family(
        names::ROLLUP_INDEX,
        Gauge,
        "With [[rollups]]: each group's latest health index (0 at warn, 1 at alarm; NaN while all its devices are stale).",
    ),
];

static PROCESS: LazyLock<metrics_process::Collector> = LazyLock::new(metrics_process::Collector::default);

/// Describe every family, and say which build runs. Call once the
/// recorder is installed.
pub(crate) fn describe() {
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
pub(crate) fn collect_process() {
    PROCESS.collect();
}

/// `x86_64-linux`, `aarch64-linux`, ...
fn target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}
