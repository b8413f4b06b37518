//! The validated configuration: each stage's own settings, as [`validate`](super::validate)
//! builds them from the schema, with topic templates parsed, paths
//! resolved, secrets read and every duration in its unit, so nothing
//! downstream re-checks, re-parses or converts. The raw schema stays
//! inside `config` (for `check-config`'s masked listing).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::schema::Config;
use crate::durable::StateSettings;
use crate::mqtt::MqttSettings;
use crate::ops::logging::LogSettings;
use crate::pipeline::{Limits, Pipeline};
use crate::redundancy::RedundancySettings;
use crate::sparkplug::SparkplugSettings;

/// The validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The file it was read from.
    pub path: PathBuf,
    pub mqtt: MqttSettings,
    pub state: StateSettings,
    /// `http.listen`: the status page, /devices, /metrics and /healthz.
    pub http_listen: SocketAddr,
    pub log: LogSettings,
    pub limits: Limits,
    pub pipelines: Vec<Pipeline>,
    /// Set when a `[sparkplug]` section is.
    pub sparkplug: Option<SparkplugSettings>,
    /// Set when a `[redundancy]` section is.
    pub redundancy: Option<RedundancySettings>,
    pub(super) raw: Config,
}

impl Settings {
    /// The effective settings as TOML, secrets masked.
    pub(crate) fn display_masked(&self) -> String {
        let mut shown = self.raw.clone();
        if shown.mqtt.host.is_some() {
            shown.mqtt.port.get_or_insert(super::schema::DEFAULT_PORT);
        }
        if shown.mqtt.password.is_some() {
            shown.mqtt.password = Some("********".into());
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("(cannot render settings: {e})"))
    }

    /// The Sparkplug Edge Node's identity, when there is one.
    pub(crate) fn node(&self) -> Option<&crate::sparkplug::node::NodeConfig> {
        self.sparkplug.as_ref().map(|s| &s.node)
    }
}
