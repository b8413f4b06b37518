//! The configuration file's schema: what may be written, with the defaults
//! (serde; unknown keys are errors). Validation and typing are in
//! [`validate`](super::validate) and [`settings`](super::settings).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::mqtt::Protocol;
use crate::ops::logging::LogFormat;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// lineguard as a Sparkplug B Edge Node (for pipelines with `format = "sparkplug"`).
    #[serde(default)]
    pub sparkplug: Option<SparkplugConfig>,
    /// A primary and a backup on the same stream (absent: standalone).
    #[serde(default)]
    pub redundancy: Option<RedundancyConfig>,
    pub pipelines: Vec<PipelineConfig>,
    /// Health indices over groups of a pipeline's devices.
    #[serde(default)]
    pub rollups: Vec<RollupConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RollupConfig {
    pub name: String,
    pub pipeline: String,
    /// Placeholders of the pipeline's input template, e.g. `{line}`.
    pub group: String,
    pub output_topic: String,
    /// Score name → weight.
    pub inputs: std::collections::BTreeMap<String, f64>,
    /// Device key or glob → weight (others 1.0).
    #[serde(default)]
    pub weights: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    pub method: crate::pipeline::rollup::Method,
    #[serde(default = "default_rollup_interval")]
    pub interval_secs: u64,
    #[serde(default = "default_rollup_stale")]
    pub stale_secs: u64,
}

fn default_rollup_interval() -> u64 {
    10
}

fn default_rollup_stale() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedundancyConfig {
    /// `primary` or `backup`.
    pub role: crate::redundancy::Role,
    /// The other instance's `mqtt.client_id`.
    pub peer: String,
    /// What a standby keeps to publish when it takes over, in seconds of data time.
    #[serde(default = "default_takeover_replay")]
    pub takeover_replay_secs: u64,
}

fn default_takeover_replay() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SparkplugConfig {
    pub group_id: String,
    /// Defaults to `mqtt.client_id`.
    #[serde(default)]
    pub edge_node_id: Option<String>,
    /// Sparkplug 3.0 primary host application id: births wait until its
    /// `spBv1.0/STATE/{id}` says online, and the session ends when it goes offline.
    #[serde(default)]
    pub primary_host_id: Option<String>,
    /// Client id of the node's own MQTT connection (its will is the NDEATH).
    /// Defaults to `{mqtt.client_id}-sparkplug`.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// How a pipeline publishes its scores.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub(super) enum OutputFormat {
    /// The SPEC's JSON score payload on `output_topic`.
    #[default]
    Json,
    /// Sparkplug B DBIRTH/DDATA/DDEATH per device, through the Edge Node.
    Sparkplug,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MqttConfig {
    /// One broker: its host (and `port`, 1883 by default)...
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// ...or several, `"host:port"` each, tried in turn when a connection
    /// is lost (a clustered broker's nodes).
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Stable across restarts: the broker keeps this client's session (and
    /// queued QoS 1 telemetry) under it.
    pub client_id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the password (e.g. a systemd credential); when it is
    /// not empty it wins over `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// First reconnect delay; doubles per failure up to `reconnect_max_ms`, with jitter.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// TLS to the broker (rustls). Absent: plain TCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// MQTT version of the telemetry connection: "3.1.1" (default) or "5".
    #[serde(default)]
    pub protocol: Protocol,
    /// MQTT version of the score connection: "5" (default), so that the
    /// broker can say when it refuses a publish (an ACL); "3.1.1" for a
    /// broker without MQTT 5, where a refused score cannot be told from a
    /// published one.
    #[serde(default = "default_scores_protocol")]
    pub scores_protocol: Protocol,
    /// MQTT 5: telemetry messages the broker may send before our
    /// acknowledgements (which wait for the commit). With 3.1.1 the broker
    /// sets this itself (mosquitto: `max_inflight_messages`, 20).
    #[serde(default = "default_receive_maximum")]
    pub receive_maximum: u16,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsConfig {
    /// PEM file of the CA(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for brokers that require mTLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateConfig {
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
    /// Group commit: window tails and new scores are made durable together,
    /// one fsync for everything since the last commit, at most once per this
    /// many milliseconds. Telemetry is acknowledged after its commit, so a
    /// longer interval saves disk writes (flash wear) but holds more messages
    /// unacknowledged at the broker; scores never wait for it.
    #[serde(default = "default_commit_interval")]
    pub commit_interval_ms: u64,
    /// Scores not yet acknowledged by the broker are kept up to this many
    /// bytes and this age; beyond, the oldest are dropped and counted.
    #[serde(default = "default_outbox_bytes")]
    pub outbox_max_bytes: u64,
    #[serde(default = "default_outbox_age")]
    pub outbox_max_age_secs: u64,
    /// On SIGTERM, how long to keep publishing the outbox before exiting
    /// (what is left stays durable for the next start).
    #[serde(default = "default_drain")]
    pub drain_timeout_secs: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: default_state_dir(),
            commit_interval_ms: default_commit_interval(),
            outbox_max_bytes: default_outbox_bytes(),
            outbox_max_age_secs: default_outbox_age(),
            drain_timeout_secs: default_drain(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpConfig {
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9898".parse().expect("literal") }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter: `info`, `lineguard=debug,rumqttc=warn`, ...
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: default_level() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsConfig {
    /// Larger telemetry payloads are rejected unread.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Largest batch of windows run through a model at once.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// After the first message of a turn, how long (µs) a pipeline keeps
    /// taking more before it scores (unless `max_batch` windows are ready
    /// first). One model run, one hand-over to the publisher and one wake-up
    /// of each thread then serve every message of that time instead of each
    /// message alone; 0 scores whatever is queued at once.
    #[serde(default = "default_batch_wait")]
    pub batch_wait_us: u64,
    /// Samples beyond this in one JSON array are rejected (the first ones are kept).
    #[serde(default = "default_max_samples")]
    pub max_samples_per_message: usize,
    /// A `values` object with more keys than this is rejected.
    #[serde(default = "default_max_keys")]
    pub max_keys_per_sample: usize,
    /// Devices (windows) kept per pipeline; a new device beyond this evicts
    /// the least recently seen ones.
    #[serde(default = "default_max_devices")]
    pub max_devices_per_pipeline: usize,
    /// A device with no accepted sample for this long is evicted (its window dropped).
    #[serde(default = "default_device_idle")]
    pub device_idle_secs: u64,
    /// A sample stamped further ahead of the gateway's clock than this is
    /// rejected (`future_timestamp`) before it reaches the window: one
    /// sample from a device with a wrong clock must not make every later
    /// one look out of order.
    #[serde(default = "default_max_future")]
    pub max_future_ms: u64,
    /// With telemetry connected, `/healthz` reports unhealthy when no
    /// message has arrived for this long (0: off). For a subscription that
    /// is granted but delivers nothing, e.g. an ACL that denies reading.
    #[serde(default)]
    pub stale_intake_secs: u64,
    /// Deeper `[`/`{` nesting is rejected before parsing.
    #[serde(default = "default_max_depth")]
    pub max_json_depth: usize,
    /// If set, rejected payloads are published here (QoS 0) with the reason.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: default_max_payload(),
            max_batch: default_max_batch(),
            batch_wait_us: default_batch_wait(),
            max_samples_per_message: default_max_samples(),
            max_keys_per_sample: default_max_keys(),
            max_devices_per_pipeline: default_max_devices(),
            device_idle_secs: default_device_idle(),
            max_future_ms: default_max_future(),
            stale_intake_secs: 0,
            max_json_depth: default_max_depth(),
            dead_letter_topic: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PipelineConfig {
    pub name: String,
    pub model: PathBuf,
    /// Defaults to the model path with `.toml`.
    #[serde(default)]
    pub card: Option<PathBuf>,
    pub input_topic: String,
    /// The payload shape of the input (default: `sparkplug` on a
    /// `spBv1.0/...` topic, `lineguard` otherwise).
    #[serde(default)]
    pub input_format: Option<crate::ingest::format::InputFormat>,
    /// The unit of numeric timestamps (default: the format's own).
    #[serde(default)]
    pub ts_unit: Option<crate::ingest::format::TsUnit>,
    /// `input_format = "tag"`: the object key of the value (default `value`).
    #[serde(default)]
    pub tag_value: Option<String>,
    /// `input_format = "tag"`: the object key of the timestamp (default `timestamp`).
    #[serde(default)]
    pub tag_ts: Option<String>,
    /// `input_format = "tag"`: the object key of a quality flag (none by default).
    #[serde(default)]
    pub tag_quality: Option<String>,
    /// `input_format = "kepware"`: how a record's `id` names the device and
    /// the feature (default `{channel}.{device}.{feature}`).
    #[serde(default)]
    pub tag_id: Option<String>,
    /// Required with `format = "json"`; not used with `format = "sparkplug"`.
    #[serde(default)]
    pub output_topic: Option<String>,
    #[serde(default)]
    pub format: OutputFormat,
    /// Sparkplug device id from the input placeholders, e.g. `{line}.{machine}`
    /// (the default: the placeholder values joined by `.`).
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default = "default_hop")]
    pub hop: usize,
    /// If set, alarm state changes (with the card's hysteresis and debounce)
    /// are published here, retained, per device.
    #[serde(default)]
    pub alarm_topic: Option<String>,
    /// Input drift (see [`pipeline::drift`](crate::pipeline::drift)): the exponential weighting's
    /// half-life, in samples.
    #[serde(default = "default_drift_half_life")]
    pub drift_half_life: f64,
    /// How often the retained drift summary is published.
    #[serde(default = "default_drift_interval")]
    pub drift_interval_secs: u64,
    /// A feature drifts when its mean, in training standard deviations, is further from 0 than this...
    #[serde(default = "default_drift_mean_z")]
    pub drift_mean_z: f64,
    /// ... or its standard deviation is more than this many times, or less
    /// than 1/this many times, the training one.
    #[serde(default = "default_drift_std_ratio")]
    pub drift_std_ratio: f64,
    /// A model scored beside the live one on every window, published on
    /// `shadow_topic` and never acted on (its card beside it).
    #[serde(default)]
    pub shadow_model: Option<String>,
    #[serde(default)]
    pub shadow_topic: Option<String>,
}

fn default_drift_half_life() -> f64 {
    crate::pipeline::drift::DEFAULT_HALF_LIFE
}
fn default_drift_interval() -> u64 {
    crate::pipeline::drift::DEFAULT_INTERVAL_SECS
}
fn default_drift_mean_z() -> f64 {
    crate::pipeline::drift::DEFAULT_MEAN_Z
}
fn default_drift_std_ratio() -> f64 {
    crate::pipeline::drift::DEFAULT_STD_RATIO
}

/// `mqtt.port` when only `mqtt.host` is given.
pub(super) const DEFAULT_PORT: u16 = 1883;
fn default_keep_alive() -> u64 {
    30
}
fn default_reconnect_min() -> u64 {
    500
}
fn default_reconnect_max() -> u64 {
    30_000
}
fn default_level() -> String {
    "info".into()
}
fn default_max_payload() -> usize {
    256 * 1024
}
fn default_max_batch() -> usize {
    256
}
fn default_batch_wait() -> u64 {
    500
}
fn default_hop() -> usize {
    1
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/lineguard")
}
fn default_scores_protocol() -> Protocol {
    Protocol::V5
}
fn default_receive_maximum() -> u16 {
    1000
}
fn default_commit_interval() -> u64 {
    1
}
fn default_outbox_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_outbox_age() -> u64 {
    7 * 24 * 3600
}
fn default_drain() -> u64 {
    10
}
fn default_max_samples() -> usize {
    1000
}
fn default_max_keys() -> usize {
    512
}
fn default_max_devices() -> usize {
    50_000
}
fn default_max_depth() -> usize {
    32
}
fn default_max_future() -> u64 {
    5 * 60 * 1000
}
fn default_device_idle() -> u64 {
    24 * 3600
}
