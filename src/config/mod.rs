//! The daemon's configuration: one TOML file plus `LINEGUARD__SECTION__KEY`
//! environment overrides, read with the `config` crate.
//!
//! `Config` is what the file says (unknown keys are errors); `Settings` is the
//! same after validation, with topic templates parsed and paths resolved, so
//! nothing downstream re-checks or re-parses it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ingest::topic::TopicTemplate;
use crate::sparkplug::node::NodeConfig;
use crate::sparkplug::{is_sparkplug_topic, DeviceIdTemplate};

pub const DEFAULT_PATH: &str = "/etc/lineguard/lineguard.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Load { path: PathBuf, message: String },
    /// A `LINEGUARD__...` variable that the file alone would not have failed on.
    #[error("environment variable {var}: {message}")]
    Environment { var: String, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
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
    pub pipelines: Vec<PipelineConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugConfig {
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
pub enum OutputFormat {
    /// The SPEC's JSON score payload on `output_topic`.
    #[default]
    Json,
    /// Sparkplug B DBIRTH/DDATA/DDEATH per device, through the Edge Node.
    Sparkplug,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum Protocol {
    #[serde(rename = "5")]
    V5,
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
}

/// `"5"` or `"3.1.1"`; also a bare `5`, as TOML allows.
impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        match text.as_str() {
            "5" => Ok(Protocol::V5),
            "3.1.1" => Ok(Protocol::V311),
            _ => Err(serde::de::Error::custom(format!(
                "MQTT version `{text}` is not one lineguard speaks: \"5\" or \"3.1.1\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for brokers that require mTLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
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
pub struct HttpConfig {
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9898".parse().expect("literal") }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain lines without timestamps or colour: journald adds both.
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
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
pub struct LimitsConfig {
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
pub struct PipelineConfig {
    pub name: String,
    pub model: PathBuf,
    /// Defaults to the model path with `.toml`.
    #[serde(default)]
    pub card: Option<PathBuf>,
    pub input_topic: String,
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
}

fn default_port() -> u16 {
    1883
}
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
    /// For a Sparkplug input (`spBv1.0/.../DDATA/...`): the same template for
    /// DBIRTH, which declares aliases and starting values.
    pub input_births: Option<TopicTemplate>,
    pub output: Output,
    pub hop: usize,
    pub alarm: Option<TopicTemplate>,
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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub path: PathBuf,
    pub raw: Config,
    pub password: Option<String>,
    /// Where `password` came from (check-config says it).
    pub password_source: PasswordSource,
    pub tls: Option<TlsMaterial>,
    pub pipelines: Vec<Pipeline>,
    /// Set when a pipeline publishes Sparkplug B.
    pub sparkplug: Option<SparkplugSettings>,
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

#[derive(Debug, Clone)]
pub struct SparkplugSettings {
    pub node: NodeConfig,
    pub client_id: String,
}

impl Settings {
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.raw.state.commit_interval_ms)
    }

    /// How long a stop may take, from the signal to the exit.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.raw.state.drain_timeout_secs)
    }

    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.raw.mqtt.keep_alive_secs)
    }

    /// The score publisher's own connection (see `mqtt::publisher`).
    pub fn publisher_client_id(&self) -> String {
        publisher_client_id(&self.raw.mqtt.client_id)
    }

    /// Retained `online`/`offline` status topic.
    pub fn status_topic(&self) -> String {
        format!("lineguard/{}/status", self.raw.mqtt.client_id)
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

/// Load and validate the configuration at `path`, with environment overrides
/// from `env` (pass `std::env::vars()`).
///
/// Environment values are taken as written (`007` stays the string `"007"`
/// for a string key); numeric and boolean keys still read them as numbers
/// and booleans. An error that one variable causes on its own is blamed on
/// that variable, not on the file.
pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Settings, ConfigError> {
    let load_err = |message: String| ConfigError::Load { path: path.to_path_buf(), message };
    if !path.exists() {
        return Err(load_err(
            "file not found (pass --config PATH, or install deploy/lineguard.toml there)".into(),
        ));
    }
    let overrides: config::Map<String, String> =
        env.into_iter().filter(|(k, _)| k.starts_with("LINEGUARD__")).collect();
    let read = |vars: config::Map<String, String>| -> Result<Config, String> {
        config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("LINEGUARD")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(vars)),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| e.to_string())
    };
    let raw = match read(overrides.clone()) {
        Ok(raw) => raw,
        Err(message) => {
            if read(config::Map::new()).is_ok() {
                let single = |k: &String, v: &String| config::Map::from([(k.clone(), v.clone())]);
                if let Some((var, _)) = overrides.iter().find(|(k, v)| read(single(k, v)).is_err()) {
                    let key = var["LINEGUARD__".len()..].to_lowercase().replace("__", ".");
                    return Err(ConfigError::Environment {
                        var: var.clone(),
                        message: format!(
                            "sets `{key}`: {} (unset or correct the variable)",
                            explain(&message)
                        ),
                    });
                }
            }
            return Err(load_err(explain(&message)));
        }
    };
    validate(path, raw)
}

/// Turn the config crate's wording into advice.
fn explain(message: &str) -> String {
    if message.contains("unknown field") {
        format!(
            "{message} (remove or correct the key; unknown keys are refused so typos cannot pass silently)"
        )
    } else if message.contains("missing field") {
        format!("{message} (this key is required; see deploy/lineguard.toml)")
    } else {
        message.to_string()
    }
}

fn validate(path: &Path, raw: Config) -> Result<Settings, ConfigError> {
    let invalid =
        |key: String, message: String| ConfigError::Invalid { path: path.to_path_buf(), key, message };
    let m = &raw.mqtt;
    if m.host.trim().is_empty() {
        return Err(invalid("mqtt.host".into(), "is empty: name the broker host".into()));
    }
    if m.port == 0 {
        return Err(invalid("mqtt.port".into(), "0 is not a broker port".into()));
    }
    if m.client_id.trim().is_empty() || m.client_id.contains(['/', '+', '#']) {
        return Err(invalid(
            "mqtt.client_id".into(),
            format!(
                "`{}` must be a non-empty id without `/`, `+` or `#` (it names the status topic)",
                m.client_id
            ),
        ));
    }
    if m.keep_alive_secs < 5 {
        return Err(invalid("mqtt.keep_alive_secs".into(), "must be at least 5 seconds".into()));
    }
    if m.receive_maximum == 0 {
        return Err(invalid("mqtt.receive_maximum".into(), "must be between 1 and 65535".into()));
    }
    if m.reconnect_min_ms == 0 || m.reconnect_max_ms < m.reconnect_min_ms {
        return Err(invalid(
            "mqtt.reconnect_min_ms".into(),
            "must be > 0 and not above mqtt.reconnect_max_ms".into(),
        ));
    }
    let (password, password_source) = match &m.password_file {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                invalid("mqtt.password_file".into(), format!("cannot read {}: {e}", file.display()))
            })?;
            let text = text.trim_end_matches(['\r', '\n']);
            if text.is_empty() {
                // The package ships an empty credential so that the unit's
                // LoadCredential= finds one: empty means "not set here".
                let fallback = m.password.as_ref().is_some_and(|p| !p.is_empty());
                (m.password.clone(), PasswordSource::EmptyFile { file: file.clone(), fallback })
            } else {
                (Some(text.to_string()), PasswordSource::File(file.clone()))
            }
        }
        None if m.password.as_ref().is_some_and(|p| !p.is_empty()) => {
            (m.password.clone(), PasswordSource::Config)
        }
        None => (None, PasswordSource::None),
    };
    // An empty password means none.
    let password = password.filter(|p| !p.is_empty());
    let tls = match &m.tls {
        None => None,
        Some(t) => {
            let pem = |key: &str, path: &Path, what: &str| -> Result<Vec<u8>, ConfigError> {
                let bytes = std::fs::read(path)
                    .map_err(|e| invalid(key.into(), format!("cannot read {}: {e}", path.display())))?;
                // Keys come as `PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`.
                let text = String::from_utf8_lossy(&bytes);
                let found = text.contains(&format!("-----BEGIN {what}"))
                    || (what == "PRIVATE KEY" && text.contains("PRIVATE KEY-----"));
                if !found {
                    return Err(invalid(key.into(), format!("{} holds no PEM {what}", path.display())));
                }
                Ok(bytes)
            };
            let ca = pem("mqtt.tls.ca_file", &t.ca_file, "CERTIFICATE")?;
            let client = match (&t.cert_file, &t.key_file) {
                (Some(c), Some(k)) => Some((
                    pem("mqtt.tls.cert_file", c, "CERTIFICATE")?,
                    pem("mqtt.tls.key_file", k, "PRIVATE KEY")?,
                )),
                (None, None) => None,
                _ => {
                    return Err(invalid(
                        "mqtt.tls.cert_file".into(),
                        "a client certificate needs both cert_file and key_file".into(),
                    ))
                }
            };
            Some(TlsMaterial { ca, client })
        }
    };
    if password.is_some() && m.username.is_none() {
        return Err(invalid("mqtt.username".into(), "a password is set but no username".into()));
    }
    if raw.limits.max_payload_bytes < 64 || raw.limits.max_payload_bytes > 64 * 1024 * 1024 {
        return Err(invalid("limits.max_payload_bytes".into(), "must be between 64 bytes and 64 MiB".into()));
    }
    let l = &raw.limits;
    for (key, v) in [
        ("limits.max_batch", l.max_batch),
        ("limits.max_samples_per_message", l.max_samples_per_message),
        ("limits.max_keys_per_sample", l.max_keys_per_sample),
        ("limits.max_devices_per_pipeline", l.max_devices_per_pipeline),
        ("limits.max_json_depth", l.max_json_depth),
    ] {
        if v == 0 {
            return Err(invalid(key.into(), "must be at least 1".into()));
        }
    }
    if l.batch_wait_us > 100_000 {
        return Err(invalid(
            "limits.batch_wait_us".into(),
            "must be at most 100000 (100 ms: every message of a turn waits for it)".into(),
        ));
    }
    if l.max_future_ms < 1000 {
        return Err(invalid(
            "limits.max_future_ms".into(),
            "must be at least 1000 (1 s): no device's clock is exactly the gateway's".into(),
        ));
    }
    if l.device_idle_secs == 0 {
        return Err(invalid("limits.device_idle_secs".into(), "must be at least 1".into()));
    }
    if let Some(t) = &l.dead_letter_topic {
        if t.is_empty() || t.contains(['+', '#']) {
            return Err(invalid(
                "limits.dead_letter_topic".into(),
                format!("`{t}` must be a topic without wildcards"),
            ));
        }
    }
    let st = &raw.state;
    if st.commit_interval_ms == 0 || st.commit_interval_ms > 1000 {
        return Err(invalid("state.commit_interval_ms".into(), "must be between 1 and 1000".into()));
    }
    if st.outbox_max_bytes < 1024 || st.outbox_max_age_secs == 0 {
        return Err(invalid(
            "state.outbox_max_bytes".into(),
            "the outbox needs at least 1024 bytes and an age limit of at least 1 s".into(),
        ));
    }
    if raw.pipelines.is_empty() {
        return Err(invalid("pipelines".into(), "no [[pipelines]]: nothing to score".into()));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut pipelines = Vec::with_capacity(raw.pipelines.len());
    for (i, p) in raw.pipelines.iter().enumerate() {
        let key = |k: &str| format!("pipelines[{i}].{k}");
        if p.name.trim().is_empty() {
            return Err(invalid(key("name"), "is empty".into()));
        }
        if raw.pipelines[..i].iter().any(|q| q.name == p.name) {
            return Err(invalid(key("name"), format!("`{}` is used by two pipelines", p.name)));
        }
        let input = TopicTemplate::parse_input(&p.input_topic)
            .map_err(|e| invalid(key("input_topic"), format!("`{}`: {e}", p.input_topic)))?;
        let input_births = if is_sparkplug_topic(&p.input_topic) {
            let levels: Vec<&str> = p.input_topic.split('/').collect();
            if levels.len() != 5 || levels[2] != "DDATA" {
                return Err(invalid(
                    key("input_topic"),
                    format!(
                        "`{}`: a Sparkplug input is `spBv1.0/{{group}}/DDATA/{{node}}/{{device}}` \
                         (group and node may be literal)",
                        p.input_topic
                    ),
                ));
            }
            let births = p.input_topic.replacen("/DDATA/", "/DBIRTH/", 1);
            Some(TopicTemplate::parse_input(&births).expect("same levels as the input"))
        } else {
            None
        };
        let output = match (p.format, &p.output_topic) {
            (OutputFormat::Json, Some(t)) => {
                if p.device_id.is_some() {
                    return Err(invalid(key("device_id"), "is for `format = \"sparkplug\"` only".into()));
                }
                Output::Json(
                    TopicTemplate::parse_output(t, &input)
                        .map_err(|e| invalid(key("output_topic"), format!("`{t}`: {e}")))?,
                )
            }
            (OutputFormat::Json, None) => {
                return Err(invalid(
                    key("output_topic"),
                    "missing: where should the scores go? (or set `format = \"sparkplug\"`)".into(),
                ))
            }
            (OutputFormat::Sparkplug, Some(_)) => {
                return Err(invalid(
                    key("output_topic"),
                    "not used with `format = \"sparkplug\"` (scores go to \
                     spBv1.0/{group_id}/DDATA/{edge_node_id}/{device_id}); remove it"
                        .into(),
                ))
            }
            (OutputFormat::Sparkplug, None) => {
                if raw.sparkplug.is_none() {
                    return Err(invalid(
                        key("format"),
                        "`sparkplug` needs a [sparkplug] section with at least `group_id`".into(),
                    ));
                }
                Output::Sparkplug(match &p.device_id {
                    Some(d) => DeviceIdTemplate::parse(d, input.placeholders())
                        .map_err(|e| invalid(key("device_id"), e))?,
                    None => DeviceIdTemplate::joined(input.placeholders()),
                })
            }
        };
        if p.hop == 0 {
            return Err(invalid(key("hop"), "must be at least 1 (1 = score on every new sample)".into()));
        }
        // Relative model paths are relative to the config file, not the cwd of systemd.
        let model = base.join(&p.model);
        let card = p
            .card
            .as_ref()
            .map(|c| base.join(c))
            .unwrap_or_else(|| crate::model::card::ModelCard::path_for(&model));
        let alarm = p
            .alarm_topic
            .as_ref()
            .map(|t| {
                TopicTemplate::parse_output(t, &input)
                    .map_err(|e| invalid(key("alarm_topic"), format!("`{t}`: {e}")))
            })
            .transpose()?;
        pipelines.push(Pipeline {
            name: p.name.clone(),
            model,
            card,
            input,
            input_births,
            output,
            hop: p.hop,
            alarm,
        });
    }
    let sparkplug = match &raw.sparkplug {
        None => None,
        Some(sp) => {
            let id = |k: &str, v: &str| -> Result<String, ConfigError> {
                if v.trim().is_empty() || v.contains(['/', '+', '#']) {
                    return Err(invalid(
                        format!("sparkplug.{k}"),
                        format!("`{v}` must be a non-empty Sparkplug id without `/`, `+` or `#`"),
                    ));
                }
                Ok(v.to_string())
            };
            let node = NodeConfig {
                group_id: id("group_id", &sp.group_id)?,
                edge_node_id: id("edge_node_id", sp.edge_node_id.as_deref().unwrap_or(&m.client_id))?,
                primary_host_id: sp
                    .primary_host_id
                    .as_deref()
                    .map(|h| id("primary_host_id", h))
                    .transpose()?,
            };
            let client_id = id(
                "client_id",
                &sp.client_id.clone().unwrap_or_else(|| format!("{}-sparkplug", m.client_id)),
            )?;
            let scores_id = publisher_client_id(&m.client_id);
            if client_id == m.client_id || client_id == scores_id {
                return Err(invalid(
                    "sparkplug.client_id".into(),
                    format!(
                        "must differ from mqtt.client_id and from the score publisher's `{scores_id}` (the \
                         broker would drop one of the two connections)"
                    ),
                ));
            }
            Some(SparkplugSettings { node, client_id })
        }
    };
    for (i, p) in pipelines.iter().enumerate() {
        let published = match (&p.output, &sparkplug) {
            (Output::Json(t), _) => t.filter().replace('+', "x"),
            (Output::Sparkplug(_), Some(sp)) => sp.node.topic("DDATA", Some("x")),
            (Output::Sparkplug(_), None) => continue,
        };
        for q in &pipelines {
            if q.takes(&published) || matches!(&p.output, Output::Json(t) if t.as_str() == q.input.as_str()) {
                return Err(invalid(
                    format!("pipelines[{i}].output_topic"),
                    format!(
                        "`{}` feeds the input of pipeline `{}`: scores would be scored",
                        p.output_display(sparkplug.as_ref().map(|s| &s.node)),
                        q.name
                    ),
                ));
            }
        }
    }
    Ok(Settings { path: path.to_path_buf(), raw, password, password_source, tls, pipelines, sparkplug })
}

/// `{mqtt.client_id}-scores`: the client id of the connection scores go out on.
fn publisher_client_id(client_id: &str) -> String {
    format!("{client_id}-scores")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[mqtt]
host = "127.0.0.1"
port = 1883
client_id = "lineguard-gw01"
password = "s3cret"
username = "lg"

[state]
dir = "/var/lib/lineguard"

[http]
listen = "127.0.0.1:9898"

[[pipelines]]
name = "press-line"
model = "/usr/share/lineguard/models/line-mlp.onnx"
input_topic = "plant/{line}/{machine}/telemetry"
output_topic = "plant/{line}/{machine}/lineguard/scores"
"#;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lineguard.toml");
        std::fs::write(&path, text).unwrap();
        load(&path, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn spec_example_loads_with_defaults() {
        let s = load_text(MINIMAL, &[]).unwrap();
        assert_eq!(s.pipelines[0].hop, 1);
        assert_eq!(s.pipelines[0].input.filter(), "plant/+/+/telemetry");
        assert_eq!(s.pipelines[0].card, Path::new("/usr/share/lineguard/models/line-mlp.toml"));
        assert_eq!(s.status_topic(), "lineguard/lineguard-gw01/status");
        let shown = s.display_masked();
        assert!(!shown.contains("s3cret") && shown.contains("********"), "{shown}");
    }

    #[test]
    fn environment_overrides() {
        let s = load_text(
            MINIMAL,
            &[("LINEGUARD__MQTT__PORT", "2883"), ("LINEGUARD__MQTT__HOST", "broker.local"), ("OTHER", "x")],
        )
        .unwrap();
        assert_eq!(s.raw.mqtt.port, 2883);
        assert_eq!(s.raw.mqtt.host, "broker.local");
    }

    /// Strings from the environment stay exactly as written; numbers and
    /// booleans still read as numbers and booleans.
    #[test]
    fn environment_strings_keep_what_was_written() {
        let s = load_text(
            MINIMAL,
            &[
                ("LINEGUARD__MQTT__CLIENT_ID", "007"),
                ("LINEGUARD__MQTT__PASSWORD", "0123456"),
                ("LINEGUARD__MQTT__USERNAME", "1e3"),
                ("LINEGUARD__MQTT__KEEP_ALIVE_SECS", "045"),
                ("LINEGUARD__LIMITS__DEAD_LETTER_TOPIC", "true"),
            ],
        )
        .unwrap();
        assert_eq!(s.raw.mqtt.client_id, "007");
        assert_eq!(s.password.as_deref(), Some("0123456"));
        assert_eq!(s.raw.mqtt.username.as_deref(), Some("1e3"));
        assert_eq!(s.raw.mqtt.keep_alive_secs, 45);
        assert_eq!(s.raw.limits.dead_letter_topic.as_deref(), Some("true"));
        assert_eq!(s.status_topic(), "lineguard/007/status");
    }

    #[test]
    fn an_unknown_or_unreadable_environment_key_names_the_variable() {
        let e = load_text(MINIMAL, &[("LINEGUARD__MQTT__HOTS", "broker")]).unwrap_err().to_string();
        assert!(e.starts_with("environment variable LINEGUARD__MQTT__HOTS:"), "{e}");
        assert!(e.contains("mqtt.hots") && e.contains("unknown field"), "{e}");
        assert!(!e.contains("lineguard.toml"), "the file is not to blame: {e}");
        let e = load_text(MINIMAL, &[("LINEGUARD__MQTT__PORT", "eighty")]).unwrap_err().to_string();
        assert!(e.starts_with("environment variable LINEGUARD__MQTT__PORT:"), "{e}");
        // The file's own mistakes are still the file's.
        let e = load_text(&MINIMAL.replace("port = 1883", "prot = 1883"), &[("LINEGUARD__MQTT__HOST", "b")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lineguard.toml") && e.contains("prot"), "{e}");
    }

    /// A non-empty password file wins; an empty one (as the package ships
    /// it for the unit's LoadCredential=) leaves `password` in force.
    #[test]
    fn password_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mqtt-password");
        let with_file = |content: &str| {
            std::fs::write(&file, content).unwrap();
            let env = [("LINEGUARD__MQTT__PASSWORD_FILE", file.to_str().unwrap())];
            load_text(MINIMAL, &env).unwrap()
        };
        let s = with_file("");
        assert_eq!(s.password.as_deref(), Some("s3cret"), "an empty file: the config's password");
        assert!(s.password_source.to_string().starts_with("from mqtt.password ("), "{}", s.password_source);
        let s = with_file("from-file\n");
        assert_eq!(s.password.as_deref(), Some("from-file"));
        assert_eq!(s.password_source, PasswordSource::File(file.clone()));
        let s = load_text(MINIMAL, &[]).unwrap();
        assert_eq!(s.password_source, PasswordSource::Config);
        std::fs::write(&file, "").unwrap();
        let no_password = MINIMAL.replace("password = \"s3cret\"\n", "");
        let env = [("LINEGUARD__MQTT__PASSWORD_FILE", file.to_str().unwrap())];
        let s = load_text(&no_password, &env).unwrap();
        assert_eq!(s.password, None);
        assert!(s.password_source.to_string().starts_with("none ("), "{}", s.password_source);
    }

    #[test]
    fn mqtt_protocol_defaults_to_3_1_1_and_5_is_chosen_by_name() {
        let s = load_text(MINIMAL, &[]).unwrap();
        assert_eq!((s.raw.mqtt.protocol, s.raw.mqtt.receive_maximum), (Protocol::V311, 1000));
        let s = load_text(MINIMAL, &[("LINEGUARD__MQTT__PROTOCOL", "3.1.1")]).unwrap();
        assert_eq!(s.raw.mqtt.protocol, Protocol::V311);
        let s = load_text(MINIMAL, &[("LINEGUARD__MQTT__PROTOCOL", "5")]).unwrap();
        assert_eq!(s.raw.mqtt.protocol, Protocol::V5, "from the environment");
        let s = load_text(&MINIMAL.replace("port = 1883", "port = 1883\nprotocol = 5"), &[]).unwrap();
        assert_eq!(s.raw.mqtt.protocol, Protocol::V5);
        let text = MINIMAL.replace("port = 1883", "port = 1883\nprotocol = \"5\"\nreceive_maximum = 200");
        let s = load_text(&text, &[]).unwrap();
        assert_eq!((s.raw.mqtt.protocol, s.raw.mqtt.receive_maximum), (Protocol::V5, 200));
        let e = load_text(&MINIMAL.replace("port = 1883", "port = 1883\nprotocol = \"4\""), &[]).unwrap_err();
        assert!(e.to_string().contains("protocol"), "{e}");
        let e =
            load_text(&MINIMAL.replace("port = 1883", "port = 1883\nreceive_maximum = 0"), &[]).unwrap_err();
        assert!(e.to_string().contains("mqtt.receive_maximum"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = load_text(&MINIMAL.replace("port = 1883", "prot = 1883"), &[]).unwrap_err().to_string();
        assert!(e.contains("prot") && e.contains("unknown"), "{e}");
        let e = load_text(
            &MINIMAL.replace("hop", "x").replace("name = \"press-line\"", "name = \"p\"\nhopp = 2"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("hopp"), "{e}");
        let e = load_text(MINIMAL, &[("LINEGUARD__MQTT__COLOUR", "red")]).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn sparkplug_output_and_input() {
        let spb = MINIMAL.replace(
            "output_topic = \"plant/{line}/{machine}/lineguard/scores\"",
            "format = \"sparkplug\"\ndevice_id = \"{line}.{machine}\"",
        );
        let e = load_text(&spb, &[]).unwrap_err().to_string();
        assert!(e.contains("pipelines[0].format") && e.contains("[sparkplug]"), "{e}");
        let with_node = format!("{spb}\n[sparkplug]\ngroup_id = \"plant\"\n");
        let s = load_text(&with_node, &[]).unwrap();
        let sp = s.sparkplug.as_ref().unwrap();
        assert_eq!(sp.node.edge_node_id, "lineguard-gw01", "defaults to the client id");
        assert_eq!(sp.client_id, "lineguard-gw01-sparkplug");
        assert_eq!(s.publisher_client_id(), "lineguard-gw01-scores");
        let clash = with_node
            .replace("group_id = \"plant\"", "group_id = \"plant\"\nclient_id = \"lineguard-gw01-scores\"");
        assert!(load_text(&clash, &[]).unwrap_err().to_string().contains("sparkplug.client_id"));
        assert_eq!(
            s.pipelines[0].output_display(Some(&sp.node)),
            "spBv1.0/plant/DDATA/lineguard-gw01/{line}.{machine}"
        );
        let both = with_node.replace("format = ", "output_topic = \"a/{line}/{machine}\"\nformat = ");
        assert!(load_text(&both, &[]).unwrap_err().to_string().contains("pipelines[0].output_topic"));
        let bad = with_node.replace("group_id = \"plant\"", "group_id = \"a/b\"");
        assert!(load_text(&bad, &[]).unwrap_err().to_string().contains("sparkplug.group_id"));

        let input = MINIMAL.replace("plant/{line}/{machine}/telemetry", "spBv1.0/{line}/DDATA/gw/{machine}");
        let s = load_text(&input, &[]).unwrap();
        assert_eq!(s.pipelines[0].filters(), ["spBv1.0/+/DDATA/gw/+", "spBv1.0/+/DBIRTH/gw/+"]);
        assert!(s.pipelines[0].takes("spBv1.0/l1/DBIRTH/gw/m1"));
        let wrong = MINIMAL.replace("plant/{line}/{machine}/telemetry", "spBv1.0/{line}/NDATA/{machine}");
        assert!(load_text(&wrong, &[]).unwrap_err().to_string().contains("DDATA"));
        // The node's own DDATA must not feed a Sparkplug input.
        let feedback = format!(
            "{}\n[[pipelines]]\nname = \"q\"\nmodel = \"m.onnx\"\ninput_topic = \"spBv1.0/plant/DDATA/{{node}}/{{device}}\"\noutput_topic = \"x/{{node}}/{{device}}\"\n",
            with_node
        );
        assert!(load_text(&feedback, &[]).unwrap_err().to_string().contains("scores would be scored"));
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            (
                "input_topic = \"plant/{line}/{machine}/telemetry\"",
                "input_topic = \"plant/#\"",
                "pipelines[0].input_topic",
            ),
            (
                "output_topic = \"plant/{line}/{machine}/lineguard/scores\"",
                "output_topic = \"x/{cell}\"",
                "pipelines[0].output_topic",
            ),
            ("client_id = \"lineguard-gw01\"", "client_id = \"a/b\"", "mqtt.client_id"),
            ("port = 1883", "port = 70000", "port"),
            ("listen = \"127.0.0.1:9898\"", "listen = \"nowhere\"", "listen"),
        ];
        for (from, to, key) in cases {
            let e = load_text(&MINIMAL.replace(from, to), &[]).unwrap_err().to_string();
            assert!(e.contains(key), "{to}: {e}");
        }
        let e = load_text(&MINIMAL.replace("name = \"press-line\"", "name = \"p\"\nhop = 0"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipelines[0].hop"), "{e}");
        let limits = |wait: &str| load_text(&format!("{MINIMAL}\n[limits]\nbatch_wait_us = {wait}\n"), &[]);
        let e = limits("100001").unwrap_err().to_string();
        assert!(e.contains("limits.batch_wait_us") && e.contains("at most 100000"), "{e}");
        assert_eq!(limits("0").unwrap().raw.limits.batch_wait_us, 0, "0 scores at once");
        assert_eq!(load_text(MINIMAL, &[]).unwrap().raw.limits.batch_wait_us, 500, "the default");
        let e = load(Path::new("/nonexistent/lineguard.toml"), []).unwrap_err().to_string();
        assert!(e.contains("not found"), "{e}");
    }
}
