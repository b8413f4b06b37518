//! `GET /devices`: the state of the line, read from the pipelines
//! themselves. Each pipeline's worker answers a request between two turns
//! with its devices (window fill, newest sample, latest scores, states,
//! explanations and trend) and the features whose inputs drift; nothing is
//! kept or copied for it on the scoring path.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::daemon::status::{Board, ModelStatus, PairStatus, PeerView};
use crate::model::card::State;
use crate::ops::health::Health;
use crate::pipeline::recent::DeviceView;
use crate::pipeline::worker::ViewRequest;

/// How long a pipeline may take to answer (one turn at most, normally).
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The pipelines that can be asked, by name (filled in as they start).
#[derive(Default)]
pub(crate) struct DeviceViews {
    pipelines: RwLock<Vec<(String, mpsc::Sender<ViewRequest>)>>,
}

/// What `/devices` filters by: `?pipeline=NAME&state=alarm,warn`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Filter {
    pub pipeline: Option<String>,
    /// Instantaneous states to keep (`none`: not scored yet); empty: all.
    pub states: Vec<Option<State>>,
}

impl Filter {
    /// From a URL query string; an unknown key or state is an error.
    pub(crate) fn parse(query: Option<&str>) -> Result<Filter, String> {
        let mut f = Filter::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "pipeline" => f.pipeline = Some(v),
                "state" => {
                    for s in v.split(',').filter(|s| !s.is_empty()) {
                        f.states.push(match s {
                            "ok" => Some(State::Ok),
                            "warn" => Some(State::Warn),
                            "alarm" => Some(State::Alarm),
                            "none" => None,
                            other => return Err(format!("unknown state `{other}` (ok, warn, alarm, none)")),
                        });
                    }
                }
                other => return Err(format!("unknown parameter `{other}` (pipeline, state)")),
            }
        }
        Ok(f)
    }

    fn keeps(&self, d: &DeviceView) -> bool {
        self.states.is_empty() || self.states.contains(&d.state)
    }
}

/// `%41` and `+` in a query value.
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| {
                std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The whole answer of `/devices`.
#[derive(Debug, Serialize)]
pub(crate) struct Overview {
    pub client_id: String,
    pub version: &'static str,
    pub generated_ms: i64,
    /// Each broker connection: up or not.
    pub connections: std::collections::BTreeMap<&'static str, bool>,
    /// The models in service.
    pub pipelines: Vec<PipelineStatus>,
    /// Worst first: alarm, warn, ok, not yet scored; then by pipeline and device.
    pub devices: Vec<DeviceView>,
    /// The latest roll-up of every group (`[[rollups]]`), by roll-up and group.
    pub rollups: Vec<crate::pipeline::rollup::RollupMessage>,
    /// Pipelines that did not answer in time (busy or stopping).
    pub unanswered: Vec<String>,
    /// Under `[redundancy]`: this instance's role, whether it is active and
    /// why, and what its peer's status says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redundancy: Option<PairDetail>,
}

/// This instance's standing in its pair, as `/devices` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct PairDetail {
    #[serde(flatten)]
    pub pair: PairStatus,
    pub why: &'static str,
    pub peer: PeerView,
}

/// A pipeline: its model, and the features whose inputs drift from the
/// training data now (`null` when the pipeline did not answer).
#[derive(Debug, Serialize)]
pub(crate) struct PipelineStatus {
    #[serde(flatten)]
    pub model: ModelStatus,
    pub drifting: Option<Vec<String>>,
}

/// The order of the status page: the worse of a device's state and alarm
/// state first.
fn severity(d: &DeviceView) -> u8 {
    let worst = d.state.max(d.alarm);
    match worst {
        Some(State::Alarm) => 0,
        Some(State::Warn) => 1,
        Some(State::Ok) => 2,
        None => 3,
    }
}

impl DeviceViews {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A pipeline to ask, on the channel its worker answers.
    pub(crate) fn register(&self, pipeline: &str, asks: mpsc::Sender<ViewRequest>) {
        self.pipelines.write().unwrap_or_else(|p| p.into_inner()).push((pipeline.to_string(), asks));
    }

    /// Ask every pipeline `filter` names for its devices.
    pub(crate) async fn overview(&self, filter: &Filter, board: &Board, health: &Health) -> Overview {
        let models = board.models();
        let asked: Vec<(String, mpsc::Sender<ViewRequest>)> = self
            .pipelines
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(name, _)| filter.pipeline.as_ref().is_none_or(|p| p == name))
            .cloned()
            .collect();
        let mut pending = Vec::new();
        for (name, tx) in asked {
            let (reply, answer) = oneshot::channel();
            let sent = tx.try_send(reply).is_ok();
            pending.push((name, sent.then_some(answer)));
        }
        let mut devices = Vec::new();
        let mut unanswered = Vec::new();
        let mut drifting = std::collections::HashMap::new();
        let mut rollups = Vec::new();
        for (name, answer) in pending {
            let view = match answer {
                Some(a) => tokio::time::timeout(ANSWER_WITHIN, a).await.ok().and_then(Result::ok),
                None => None,
            };
            match view {
                Some(v) => {
                    devices.extend(v.devices.into_iter().filter(|d| filter.keeps(d)));
                    drifting.insert(name, v.drifting);
                    rollups.extend(v.rollups);
                }
                None => unanswered.push(name),
            }
        }
        devices.sort_by(|a, b| {
            (severity(a), &a.pipeline, &a.device).cmp(&(severity(b), &b.pipeline, &b.device))
        });
        let pipelines = models
            .into_iter()
            .filter(|m| filter.pipeline.as_ref().is_none_or(|p| *p == m.pipeline))
            .map(|model| PipelineStatus { drifting: drifting.remove(&model.pipeline), model })
            .collect();
        Overview {
            client_id: board.client_id.clone(),
            version: env!("CARGO_PKG_VERSION"),
            generated_ms: crate::clock::now_ms(),
            connections: health.connections().into_iter().collect(),
            pipelines,
            devices,
            rollups,
            unanswered,
            redundancy: board.pair().map(|pair| PairDetail { why: pair.why, peer: pair.peer.clone(), pair }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_from_the_query() {
        assert_eq!(Filter::parse(None).unwrap(), Filter::default());
        let f = Filter::parse(Some("pipeline=press%20line&state=alarm,none")).unwrap();
        assert_eq!(f.pipeline.as_deref(), Some("press line"));
        assert_eq!(f.states, [Some(State::Alarm), None]);
        assert_eq!(Filter::parse(Some("pipeline=a+b")).unwrap().pipeline.as_deref(), Some("a b"));
        assert!(Filter::parse(Some("state=bad")).unwrap_err().contains("bad"));
        assert!(Filter::parse(Some("colour=red")).unwrap_err().contains("colour"));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
