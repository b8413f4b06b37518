//! The validated configuration, typed: what every other module reads.
//!
//! Built only by `validate.rs` from the schema, with topic templates
//! parsed, paths resolved, secrets read and every duration in its unit, so
//! nothing downstream re-checks, re-parses or converts. The raw schema stays
//! inside `config` (for `check-config`'s masked listing).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::schema::{Config, LogFormat, Protocol};
use crate::ingest::format::{InputFormat, TsUnit};
use crate::ingest::kepware::TagId;
use crate::ingest::tag::TagKeys;
use crate::ingest::topic::TopicTemplate;
use crate::sparkplug::node::NodeConfig;
use crate::sparkplug::DeviceIdTemplate;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file it was read from.
    pub path: PathBuf,
    pub mqtt: MqttSettings,
    pub state: StateSettings,
    /// `http.listen`: /metrics and /healthz.
    pub http_listen: SocketAddr,
    pub log: LogSettings,
    pub limits: Limits,
    pub pipelines: Vec<Pipeline>,
    /// Set when a `[sparkplug]` section is.
    pub sparkplug: Option<SparkplugSettings>,
    pub(super) raw: Config,
}

#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// Stable across restarts: the broker keeps the telemetry session under it.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Where `password` came from (check-config says it).
    pub password_source: PasswordSource,
    pub tls: Option<TlsMaterial>,
    pub keep_alive: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// The telemetry connection's MQTT version.
    pub protocol: Protocol,
    /// MQTT 5: telemetry messages in flight before our acknowledgements.
    pub receive_maximum: u16,
    /// The score connection's MQTT version.
    pub scores_protocol: Protocol,
}

#[derive(Debug, Clone)]
pub struct StateSettings {
    pub dir: PathBuf,
    /// At most one group commit (fsync) per this long.
    pub commit_interval: Duration,
    pub outbox_max_bytes: u64,
    pub outbox_max_age: Duration,
    /// How long a stop may take, from the signal to the exit.
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter (`RUST_LOG` wins).
    pub level: String,
}

/// Every bound on input and work, in its unit.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_batch: usize,
    /// How long a turn keeps taking messages after its first (zero: none).
    pub batch_wait: Duration,
    pub max_samples_per_message: usize,
    pub max_keys_per_sample: usize,
    pub max_json_depth: usize,
    pub max_devices_per_pipeline: usize,
    /// A device silent this long is evicted.
    pub device_idle: Duration,
    /// A sample stamped further ahead of the gateway's clock is rejected.
    pub max_future: Duration,
    /// Unhealthy when connected telemetry brings nothing this long (`None`: never).
    pub stale_intake: Option<Duration>,
    pub dead_letter_topic: Option<String>,
}

/// TLS material read and checked at load.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca: Vec<u8>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").field("client_auth", &self.client.is_some()).finish_non_exhaustive()
    }
}

/// Which setting the broker password came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    None,
    /// `mqtt.password` (the file or `LINEGUARD__MQTT__PASSWORD`).
    Config,
    /// `mqtt.password_file`, not empty.
    File(PathBuf),
    /// `mqtt.password_file` is empty, so `mqtt.password` (or none) is used.
    EmptyFile {
        file: PathBuf,
        fallback: bool,
    },
}

impl std::fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordSource::None => f.write_str("none"),
            PasswordSource::Config => f.write_str("from mqtt.password"),
            PasswordSource::File(p) => write!(f, "from mqtt.password_file {}", p.display()),
            PasswordSource::EmptyFile { file, fallback: true } => {
                write!(f, "from mqtt.password ({} is empty)", file.display())
            }
            PasswordSource::EmptyFile { file, fallback: false } => {
                write!(f, "none ({} is empty and mqtt.password is not set)", file.display())
            }
        }
    }
}

/// Where a pipeline's scores go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Json(TopicTemplate),
    Sparkplug(DeviceIdTemplate),
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub model: PathBuf,
    pub card: PathBuf,
    pub input: TopicTemplate,
    /// The payload shape of the input.
    pub input_format: InputFormat,
    /// The unit of its numeric timestamps.
    pub ts_unit: TsUnit,
    /// For `input_format = "tag"`: the payload's keys.
    pub tag_keys: TagKeys,
    /// For `input_format = "kepware"`: how a record's id names device and feature.
    pub tag_id: TagId,
    /// For a Sparkplug input (`spBv1.0/.../DDATA/...`): the same template for
    /// DBIRTH, which declares aliases and starting values.
    pub input_births: Option<TopicTemplate>,
    pub output: Output,
    pub hop: usize,
    pub alarm: Option<TopicTemplate>,
    /// Input drift: its settings and where its summary goes.
    pub drift: crate::pipeline::drift::DriftSettings,
    /// A shadow model: scored on every window, published apart, never acted on.
    pub shadow: Option<Shadow>,
}

/// A pipeline's shadow model.
#[derive(Debug, Clone, PartialEq)]
pub struct Shadow {
    pub model: PathBuf,
    pub card: PathBuf,
    /// Where its scores go (an output template of the input's placeholders).
    pub topic: TopicTemplate,
}

impl Pipeline {
    /// Every subscription filter of the pipeline.
    pub fn filters(&self) -> Vec<String> {
        let mut f = vec![self.input.filter()];
        f.extend(self.input_births.as_ref().map(|t| t.filter()));
        f
    }

    /// Whether `topic` is one of this pipeline's inputs.
    pub fn takes(&self, topic: &str) -> bool {
        self.input.matches(topic) || self.input_births.as_ref().is_some_and(|t| t.matches(topic))
    }

    /// The output as shown to people (status, check-config).
    pub fn output_display(&self, node: Option<&NodeConfig>) -> String {
        match (&self.output, node) {
            (Output::Json(t), _) => t.as_str().to_string(),
            (Output::Sparkplug(d), Some(n)) => n.topic("DDATA", Some(d.as_str())),
            (Output::Sparkplug(d), None) => format!("sparkplug device {}", d.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SparkplugSettings {
    pub node: NodeConfig,
    /// The Edge Node's own connection.
    pub client_id: String,
}

impl Settings {
    /// The score publisher's own connection (see `mqtt::publisher`).
    pub fn publisher_client_id(&self) -> String {
        publisher_client_id(&self.mqtt.client_id)
    }

    /// Retained `online`/`offline` status topic.
    pub fn status_topic(&self) -> String {
        format!("lineguard/{}/status", self.mqtt.client_id)
    }

    /// The effective settings as TOML, secrets masked.
    pub fn display_masked(&self) -> String {
        let mut shown = self.raw.clone();
        if shown.mqtt.password.is_some() {
            shown.mqtt.password = Some("********".into());
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("(cannot render settings: {e})"))
    }
}

/// `{mqtt.client_id}-scores`: the client id of the connection scores go out on.
pub(super) fn publisher_client_id(client_id: &str) -> String {
    format!("{client_id}-scores")
}
