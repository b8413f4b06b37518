//! The broker connections' settings (`[mqtt]`, `[mqtt.tls]`), validated
//! (see [`config`](crate::config)): where the broker is, who we are to it, and how each
//! connection speaks.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An MQTT version (`mqtt.protocol`, `mqtt.scores_protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) enum Protocol {
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

/// `[mqtt]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct MqttSettings {
    /// The brokers, in the order they are tried (`mqtt.host` and `mqtt.port`,
    /// or `mqtt.hosts`); never empty.
    pub brokers: Vec<BrokerAddr>,
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

/// A broker's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerAddr {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// TLS material read and checked at load.
#[derive(Clone)]
pub(crate) struct TlsMaterial {
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
pub(crate) enum PasswordSource {
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

impl MqttSettings {
    /// The score publisher's own connection (see [`Purpose::Publisher`](crate::mqtt::Purpose::Publisher)).
    pub(crate) fn publisher_client_id(&self) -> String {
        publisher_client_id(&self.client_id)
    }

    /// Retained `online`/`offline` status topic.
    pub(crate) fn status_topic(&self) -> String {
        format!("lineguard/{}/status", self.client_id)
    }
}

/// `{client_id}-scores`: the client id of the connection scores go out on.
pub(crate) fn publisher_client_id(client_id: &str) -> String {
    format!("{client_id}-scores")
}
