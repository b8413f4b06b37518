//! A pipeline's settings, as the configuration's `[[pipelines]]` and
//! `[limits]` give them, validated (see [`config`](crate::config)).

use std::time::Duration;

use crate::ingest::input::Input;
use crate::ingest::topic::TopicTemplate;
use crate::model::ModelFiles;
use crate::pipeline::drift::DriftSettings;
use crate::sparkplug::node::NodeConfig;
use crate::sparkplug::DeviceIdTemplate;

/// A validated pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pub name: String,
    pub model: ModelFiles,
    pub input: Input,
    pub output: Output,
    pub hop: usize,
    pub alarm: Option<TopicTemplate>,
    /// Input drift: its settings and where its summary goes.
    pub drift: DriftSettings,
    /// A shadow model: scored on every window, published apart, never acted on.
    pub shadow: Option<Shadow>,
    /// Health indices over groups of its devices (`[[rollups]]`).
    pub rollups: Vec<crate::pipeline::rollup::RollupSettings>,
}

/// Where a pipeline's scores go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    Json(TopicTemplate),
    Sparkplug(DeviceIdTemplate),
}

/// A pipeline's shadow model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shadow {
    pub model: ModelFiles,
    /// Where its scores go (an output template of the input's placeholders).
    pub topic: TopicTemplate,
}

impl Pipeline {
    /// The output as shown to people (status, check-config).
    pub(crate) fn output_display(&self, node: Option<&NodeConfig>) -> String {
        match (&self.output, node) {
            (Output::Json(t), _) => t.as_str().to_string(),
            (Output::Sparkplug(d), Some(n)) => n.topic("DDATA", Some(d.as_str())),
            (Output::Sparkplug(d), None) => format!("sparkplug device {}", d.as_str()),
        }
    }
}

/// Every bound on input and work, in its unit (`[limits]`).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
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
    /// A sample must carry its own `ts` (under `[redundancy]`: two instances
    /// stamp a sample's arrival differently).
    pub require_ts: bool,
}
