//! The Sparkplug Edge Node: one session's births, data, deaths and sequence
//! numbers, as a pure state machine (no I/O; the sink publishes what it returns).
//!
//! Invariants, from the Sparkplug 3.0 specification:
//! - NBIRTH is the first message of a session and carries `seq` 0 and the
//!   session's `bdSeq`, which matches the NDEATH registered as the will;
//!   every later message (not NDEATH) takes the next `seq`, modulo 256.
//! - A device's DBIRTH comes before any of its DDATA in the session and
//!   names every metric with its alias, type and current value; DDATA then
//!   carries aliases only. Aliases are unique across the node and never reused.
//! - A device that gains a metric (a second pipeline scoring it) is born
//!   again with the full set, since a DBIRTH must declare every metric.
//! - With a primary host configured, nothing is born until the host's
//!   `STATE` says online; when it says offline the node's session ends (the
//!   caller drops the connection so the broker publishes the NDEATH will).
//!
//! Scores are rendered here, at publish time, from the outbox records: `seq`
//! and births belong to a session, so they cannot be stored ahead of it.

use std::collections::BTreeMap;

use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::proto::{DataType, Metric, Payload, Value};

pub(crate) const NAMESPACE: &str = "spBv1.0";
/// The NBIRTH metric a host sets to `true` in an NCMD to ask for a rebirth.
pub(crate) const REBIRTH: &str = "Node Control/Rebirth";
pub(crate) const BD_SEQ: &str = "bdSeq";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub group_id: String,
    pub edge_node_id: String,
    /// Sparkplug 3.0 primary host application: births wait for its `STATE`.
    pub primary_host_id: Option<String>,
}

impl NodeConfig {
    pub fn topic(&self, kind: &str, device: Option<&str>) -> String {
        match device {
            Some(d) => format!("{NAMESPACE}/{}/{kind}/{}/{d}", self.group_id, self.edge_node_id),
            None => format!("{NAMESPACE}/{}/{kind}/{}", self.group_id, self.edge_node_id),
        }
    }

    pub fn state_topic(&self) -> Option<String> {
        self.primary_host_id.as_ref().map(|h| format!("{NAMESPACE}/STATE/{h}"))
    }

    /// What the node subscribes to: its commands and the primary host's state.
    pub fn filters(&self) -> Vec<String> {
        let mut f = vec![self.topic("NCMD", None)];
        f.extend(self.state_topic());
        f
    }

    /// The NDEATH of session `bd_seq` (registered as the will, and sent on a clean stop).
    pub fn ndeath(&self, bd_seq: u64, now_ms: i64) -> OutMessage {
        let payload = Payload {
            timestamp: Some(now_ms as u64),
            metrics: vec![bd_seq_metric(bd_seq, now_ms)],
            ..Default::default()
        };
        OutMessage { topic: self.topic("NDEATH", None), payload: payload.encode_to_vec() }
    }
}

/// The `bdSeq` an NBIRTH or NDEATH carries (none if it is not one).
pub(crate) fn bd_seq_of(payload: &[u8]) -> Option<u64> {
    let p = Payload::decode(payload).ok()?;
    p.metrics.iter().find(|m| m.name.as_deref() == Some(BD_SEQ)).and_then(|m| match m.value {
        Some(Value::Long(v)) => Some(v),
        Some(Value::Int(v)) => Some(u64::from(v)),
        _ => None,
    })
}

fn bd_seq_metric(bd_seq: u64, now_ms: i64) -> Metric {
    Metric {
        name: Some(BD_SEQ.into()),
        timestamp: Some(now_ms as u64),
        datatype: Some(DataType::Int64 as u32),
        value: Some(Value::Long(bd_seq)),
        ..Default::default()
    }
}

/// One device update as the outbox keeps it, until it is rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Record {
    /// New values (metric name → value), measured at `ts`.
    Data { ts: i64, metrics: Vec<(String, RecordValue)> },
    /// The device left (evicted): DDEATH.
    Death,
    /// Node metrics (a roll-up's index): NDATA, or a rebirth when one is new.
    Node { ts: i64, metrics: Vec<(String, RecordValue)> },
}

/// What a node record becomes.
#[derive(Debug, PartialEq)]
pub(crate) enum NodeRendered {
    /// An NDATA by alias.
    Data(OutMessage),
    /// A metric the NBIRTH did not declare: the node must be born again
    /// (NBIRTH with it, then every DBIRTH) before the record is rendered.
    Rebirth,
    /// Not now: no session is born.
    Unborn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum RecordValue {
    Float(f32),
    Text(String),
    /// A forecast's seconds to a threshold; none: null (not in reach).
    Double(Option<f64>),
}

impl RecordValue {
    fn datatype(&self) -> DataType {
        match self {
            RecordValue::Float(_) => DataType::Float,
            RecordValue::Text(_) => DataType::String,
            RecordValue::Double(_) => DataType::Double,
        }
    }

    /// The wire value; none for a null (then `is_null`, see [`RecordValue::null`]).
    fn wire(&self) -> Option<Value> {
        match self {
            RecordValue::Float(v) => Some(Value::Float(*v)),
            RecordValue::Text(s) => Some(Value::String(s.clone())),
            RecordValue::Double(v) => v.map(Value::Double),
        }
    }

    /// Sparkplug's `is_null`, set only on a null.
    fn null(&self) -> Option<bool> {
        matches!(self, RecordValue::Double(None)).then_some(true)
    }
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serializes")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A message to publish (QoS 0, not retained, as Sparkplug requires for
/// births and data).
#[derive(Debug, Clone, PartialEq)]
pub struct OutMessage {
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct MetricState {
    name: String,
    alias: u64,
    value: RecordValue,
    ts: i64,
}

impl MetricState {
    /// As a birth declares it: name, alias, type and current value.
    fn birth(&self) -> Metric {
        Metric {
            name: Some(self.name.clone()),
            alias: Some(self.alias),
            timestamp: Some(self.ts as u64),
            datatype: Some(self.value.datatype() as u32),
            value: self.value.wire(),
            is_null: self.value.null(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Default)]
struct Device {
    metrics: Vec<MetricState>,
    /// DBIRTH sent in this session with the current metric set.
    born: bool,
}

/// What a received message asks of the node.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Publish the births now (a rebirth request, or the primary host came online).
    Births,
    /// The primary host went offline: end the session (drop the connection).
    EndSession,
    /// Nothing to do, and why.
    Ignored(String),
}

#[derive(Debug)]
pub(crate) struct EdgeNode {
    config: NodeConfig,
    seq: u8,
    next_alias: u64,
    devices: BTreeMap<String, Device>,
    /// The node's own metrics beyond bdSeq, Rebirth and the version (roll-ups).
    node_metrics: Vec<MetricState>,
    /// NBIRTH sent in this session.
    born: bool,
    host_online: bool,
    /// Newest primary-host STATE timestamp seen; older ones are stale retained copies.
    host_state_ts: u64,
}

impl EdgeNode {
    pub(crate) fn new(config: NodeConfig) -> EdgeNode {
        EdgeNode {
            host_online: config.primary_host_id.is_none(),
            config,
            seq: 0,
            next_alias: 1,
            devices: BTreeMap::new(),
            node_metrics: Vec::new(),
            born: false,
            host_state_ts: 0,
        }
    }

    pub(crate) fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// A new MQTT session began: nothing is born in it yet.
    pub(crate) fn session_started(&mut self) {
        self.born = false;
        self.host_online = self.config.primary_host_id.is_none();
        for d in self.devices.values_mut() {
            d.born = false;
        }
    }

    /// Births are out: device data may be rendered.
    pub(crate) fn is_born(&self) -> bool {
        self.born
    }

    /// Whether `device` has had its DBIRTH in this session.
    pub(crate) fn device_born(&self, device: &str) -> bool {
        self.devices.get(device).is_some_and(|d| d.born)
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s as u64
    }

    fn message(&mut self, kind: &str, device: Option<&str>, metrics: Vec<Metric>, now_ms: i64) -> OutMessage {
        let payload = Payload {
            timestamp: Some(now_ms as u64),
            metrics,
            seq: Some(self.next_seq()),
            ..Default::default()
        };
        OutMessage { topic: self.config.topic(kind, device), payload: payload.encode_to_vec() }
    }

    /// NBIRTH (seq 0, with `bd_seq`) and a DBIRTH for every known device with
    /// its last values. Empty while a primary host is not online.
    pub(crate) fn births(&mut self, bd_seq: u64, now_ms: i64) -> Vec<OutMessage> {
        if !self.host_online {
            return Vec::new();
        }
        self.seq = 0;
        let node_metrics = vec![
            bd_seq_metric(bd_seq, now_ms),
            Metric {
                name: Some(REBIRTH.into()),
                timestamp: Some(now_ms as u64),
                datatype: Some(DataType::Boolean as u32),
                value: Some(Value::Boolean(false)),
                ..Default::default()
            },
            Metric {
                name: Some("Properties/lineguard version".into()),
                timestamp: Some(now_ms as u64),
                datatype: Some(DataType::String as u32),
                value: Some(Value::String(env!("CARGO_PKG_VERSION").into())),
                ..Default::default()
            },
        ];
        let mut node_metrics = node_metrics;
        node_metrics.extend(self.node_metrics.iter().map(MetricState::birth));
        let mut out = vec![self.message("NBIRTH", None, node_metrics, now_ms)];
        self.born = true;
        let names: Vec<String> = self.devices.keys().cloned().collect();
        for name in names {
            out.push(self.dbirth(&name, now_ms));
        }
        out
    }

    fn dbirth(&mut self, device: &str, now_ms: i64) -> OutMessage {
        let d = self.devices.get_mut(device).expect("caller knows the device");
        d.born = true;
        let metrics = d.metrics.iter().map(MetricState::birth).collect();
        self.message("DBIRTH", Some(device), metrics, now_ms)
    }

    /// The messages for one outbox record: a DBIRTH when the device is not
    /// born in this session (it carries the values), else a DDATA by alias.
    /// Call only once [`is_born`](Self::is_born).
    pub(crate) fn render(&mut self, device: &str, record: &Record, now_ms: i64) -> Vec<OutMessage> {
        match record {
            Record::Death => match self.devices.remove(device) {
                Some(d) if d.born && self.born => {
                    vec![self.message("DDEATH", Some(device), Vec::new(), now_ms)]
                }
                _ => Vec::new(),
            },
            // Rendered by `render_node`.
            Record::Node { .. } => Vec::new(),
            Record::Data { ts, metrics } => {
                let next_alias = &mut self.next_alias;
                let d = self.devices.entry(device.to_string()).or_default();
                let current = d.metrics.iter().map(|m| m.ts).max();
                if d.born && current.is_some_and(|c| *ts < c) {
                    // Older than what the host holds (pending since before a
                    // restart): history, which must not become the current value.
                    let metrics = metrics
                        .iter()
                        .filter_map(|(name, value)| {
                            let m = d
                                .metrics
                                .iter()
                                .find(|m| &m.name == name && m.value.datatype() == value.datatype())?;
                            Some(Metric {
                                alias: Some(m.alias),
                                timestamp: Some(*ts as u64),
                                value: value.wire(),
                                is_null: value.null(),
                                is_historical: Some(true),
                                ..Default::default()
                            })
                        })
                        .collect();
                    return vec![self.message("DDATA", Some(device), metrics, now_ms)];
                }
                let mut changed = Vec::with_capacity(metrics.len());
                for (name, value) in metrics {
                    let i = match d.metrics.iter().position(|m| &m.name == name) {
                        Some(i) if d.metrics[i].value.datatype() == value.datatype() => i,
                        found => {
                            // New metric (or a new type): the device must be born again.
                            let alias = *next_alias;
                            *next_alias += 1;
                            let m = MetricState { name: name.clone(), alias, value: value.clone(), ts: *ts };
                            d.born = false;
                            match found {
                                Some(i) => {
                                    d.metrics[i] = m;
                                    i
                                }
                                None => {
                                    d.metrics.push(m);
                                    d.metrics.len() - 1
                                }
                            }
                        }
                    };
                    d.metrics[i].value = value.clone();
                    d.metrics[i].ts = *ts;
                    changed.push(i);
                }
                if !d.born {
                    return vec![self.dbirth(device, now_ms)];
                }
                let metrics = changed
                    .into_iter()
                    .map(|i| {
                        let m = &d.metrics[i];
                        Metric {
                            alias: Some(m.alias),
                            timestamp: Some(m.ts as u64),
                            value: m.value.wire(),
                            is_null: m.value.null(),
                            ..Default::default()
                        }
                    })
                    .collect();
                vec![self.message("DDATA", Some(device), metrics, now_ms)]
            }
        }
    }

    /// A node record: an NDATA by alias, or, for a metric the NBIRTH did not
    /// declare, the need of a rebirth (the metric is declared from now on).
    pub(crate) fn render_node(
        &mut self,
        ts: i64,
        metrics: &[(String, RecordValue)],
        now_ms: i64,
    ) -> NodeRendered {
        if !self.born {
            return NodeRendered::Unborn;
        }
        let mut new = false;
        for (name, value) in metrics {
            match self.node_metrics.iter_mut().find(|m| &m.name == name) {
                Some(m) if m.value.datatype() == value.datatype() => {}
                Some(m) => {
                    (m.value, m.ts, new) = (value.clone(), ts, true);
                }
                None => {
                    let alias = self.next_alias;
                    self.next_alias += 1;
                    self.node_metrics.push(MetricState {
                        name: name.clone(),
                        alias,
                        value: value.clone(),
                        ts,
                    });
                    new = true;
                }
            }
        }
        if new {
            return NodeRendered::Rebirth;
        }
        let mut out = Vec::with_capacity(metrics.len());
        for (name, value) in metrics {
            let m = self.node_metrics.iter_mut().find(|m| &m.name == name).expect("declared above");
            (m.value, m.ts) = (value.clone(), ts);
            out.push(Metric {
                alias: Some(m.alias),
                timestamp: Some(ts as u64),
                value: value.wire(),
                is_null: value.null(),
                ..Default::default()
            });
        }
        NodeRendered::Data(self.message("NDATA", None, out, now_ms))
    }

    /// React to a message on one of [`NodeConfig::filters`].
    pub(crate) fn command(&mut self, topic: &str, payload: &[u8]) -> Command {
        if Some(topic) == self.config.state_topic().as_deref() {
            return self.host_state(payload);
        }
        if topic != self.config.topic("NCMD", None) {
            return Command::Ignored(format!("not a topic of this node: {topic}"));
        }
        let p = match Payload::decode(payload) {
            Ok(p) => p,
            Err(e) => return Command::Ignored(format!("NCMD is not a Sparkplug B payload: {e}")),
        };
        let rebirth = p
            .metrics
            .iter()
            .any(|m| m.name.as_deref() == Some(REBIRTH) && m.value == Some(Value::Boolean(true)));
        if !rebirth {
            return Command::Ignored("NCMD without `Node Control/Rebirth = true`".into());
        }
        if !self.host_online {
            return Command::Ignored("rebirth requested while the primary host is offline".into());
        }
        Command::Births
    }

    /// Sparkplug 3.0 `STATE`: `{"online": bool, "timestamp": ms}`, retained.
    fn host_state(&mut self, payload: &[u8]) -> Command {
        #[derive(Deserialize)]
        struct State {
            online: bool,
            #[serde(default)]
            timestamp: u64,
        }
        let s: State = match serde_json::from_slice(payload) {
            Ok(s) => s,
            Err(e) => return Command::Ignored(format!("STATE payload is not Sparkplug 3.0 JSON: {e}")),
        };
        if s.timestamp < self.host_state_ts {
            return Command::Ignored("STATE older than the last one seen".into());
        }
        self.host_state_ts = s.timestamp;
        match (s.online, self.host_online) {
            (true, false) => {
                self.host_online = true;
                Command::Births
            }
            (false, true) => {
                self.host_online = false;
                self.born = false;
                Command::EndSession
            }
            _ => Command::Ignored("primary host state unchanged".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(primary: Option<&str>) -> EdgeNode {
        EdgeNode::new(NodeConfig {
            group_id: "plant".into(),
            edge_node_id: "gw1".into(),
            primary_host_id: primary.map(String::from),
        })
    }

    fn decode(m: &OutMessage) -> Payload {
        Payload::decode(m.payload.as_slice()).unwrap()
    }

    fn data(ts: i64, v: f32) -> Record {
        Record::Data {
            ts,
            metrics: vec![
                ("p/anomaly".into(), RecordValue::Float(v)),
                ("p/state".into(), RecordValue::Text("ok".into())),
            ],
        }
    }

    #[test]
    fn births_then_data_by_alias_with_sequence_numbers() {
        let mut n = node(None);
        let b = n.births(7, 1000);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].topic, "spBv1.0/plant/NBIRTH/gw1");
        let nb = decode(&b[0]);
        assert_eq!(nb.seq, Some(0));
        assert_eq!(nb.metrics[0].name.as_deref(), Some(BD_SEQ));
        assert_eq!(nb.metrics[0].value, Some(Value::Long(7)));
        assert!(nb.metrics.iter().any(|m| m.name.as_deref() == Some(REBIRTH)));

        let first = n.render("l1.m1", &data(5, 0.5), 1001);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].topic, "spBv1.0/plant/DBIRTH/gw1/l1.m1");
        let db = decode(&first[0]);
        assert_eq!(db.seq, Some(1));
        assert_eq!(db.metrics[0].name.as_deref(), Some("p/anomaly"));
        assert_eq!(db.metrics[0].datatype, Some(DataType::Float as u32));
        assert_eq!(db.metrics[1].datatype, Some(DataType::String as u32));
        let alias = db.metrics[0].alias.unwrap();

        let second = n.render("l1.m1", &data(6, 0.25), 1002);
        let dd = decode(&second[0]);
        assert_eq!(second[0].topic, "spBv1.0/plant/DDATA/gw1/l1.m1");
        assert_eq!(dd.seq, Some(2));
        assert_eq!(dd.metrics[0].name, None, "data carries aliases only");
        assert_eq!(dd.metrics[0].alias, Some(alias));
        assert_eq!(dd.metrics[0].value, Some(Value::Float(0.25)));
        assert_eq!(dd.metrics[0].timestamp, Some(6));
    }

    /// A record older than the device's current values (still pending from
    /// before a restart) goes out as history and leaves the current values.
    #[test]
    fn an_older_record_is_history_and_not_the_current_value() {
        let mut n = node(None);
        n.births(0, 0);
        n.render("d", &data(10, 0.9), 0);
        let old = decode(&n.render("d", &data(5, 0.1), 0)[0]);
        assert_eq!(old.metrics[0].is_historical, Some(true));
        assert_eq!(
            (old.metrics[0].timestamp, old.metrics[0].value.clone()),
            (Some(5), Some(Value::Float(0.1)))
        );
        let again = n.births(0, 0);
        assert_eq!(
            decode(&again[1]).metrics[0].value,
            Some(Value::Float(0.9)),
            "the DBIRTH keeps the newest"
        );
        assert!(n.device_born("d") && !n.device_born("e"));
    }

    #[test]
    fn seq_wraps_after_255() {
        let mut n = node(None);
        n.births(0, 0);
        let mut last = 0;
        for i in 0..300 {
            last = decode(&n.render("d", &data(i, 0.0), 0)[0]).seq.unwrap();
        }
        assert_eq!(last, 300 % 256);
    }

    #[test]
    fn rebirth_rebirths_known_devices_and_aliases_stay() {
        let mut n = node(None);
        n.births(1, 0);
        let a = decode(&n.render("a", &data(1, 0.1), 0)[0]);
        n.render("b", &data(1, 0.2), 0);
        assert_eq!(n.command("spBv1.0/plant/NCMD/gw1", &rebirth_payload()), Command::Births);
        let again = n.births(1, 0);
        assert_eq!(again.len(), 3, "NBIRTH and two DBIRTHs");
        assert_eq!(decode(&again[0]).seq, Some(0));
        let a2 = decode(&again[1]);
        assert_eq!(a2.seq, Some(1));
        assert_eq!(a2.metrics[0].alias, a.metrics[0].alias);
        assert_eq!(a2.metrics[0].value, Some(Value::Float(0.1)), "last value");
    }

    fn rebirth_payload() -> Vec<u8> {
        Payload {
            timestamp: Some(1),
            metrics: vec![Metric {
                name: Some(REBIRTH.into()),
                datatype: Some(DataType::Boolean as u32),
                value: Some(Value::Boolean(true)),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn new_metric_means_a_new_dbirth_and_death_only_when_born() {
        let mut n = node(None);
        n.births(0, 0);
        n.render("d", &data(1, 0.1), 0);
        let more = Record::Data { ts: 2, metrics: vec![("q/quality".into(), RecordValue::Float(0.9))] };
        let out = n.render("d", &more, 0);
        assert!(out[0].topic.contains("/DBIRTH/"));
        assert_eq!(decode(&out[0]).metrics.len(), 3, "the full set");
        let death = n.render("d", &Record::Death, 0);
        assert_eq!(death[0].topic, "spBv1.0/plant/DDEATH/gw1/d");
        assert!(n.render("never-seen", &Record::Death, 0).is_empty());
    }

    #[test]
    fn primary_host_state_gates_births() {
        let mut n = node(Some("scada"));
        assert!(n.births(0, 0).is_empty());
        let t = "spBv1.0/STATE/scada";
        assert_eq!(n.command(t, br#"{"online":true,"timestamp":10}"#), Command::Births);
        assert_eq!(n.births(0, 0).len(), 1);
        assert!(matches!(n.command(t, br#"{"online":true,"timestamp":5}"#), Command::Ignored(_)));
        assert_eq!(n.command(t, br#"{"online":false,"timestamp":11}"#), Command::EndSession);
        assert!(!n.is_born());
        assert!(matches!(n.command(t, b"ONLINE"), Command::Ignored(_)));
    }

    #[test]
    fn ncmd_without_rebirth_is_ignored_and_records_round_trip() {
        let mut n = node(None);
        assert!(matches!(n.command("spBv1.0/plant/NCMD/gw1", b"\xff\xff"), Command::Ignored(_)));
        let r = data(3, 0.5);
        assert_eq!(Record::decode(&r.encode()), Some(r));
        let d = n.config().ndeath(4, 9);
        assert_eq!(d.topic, "spBv1.0/plant/NDEATH/gw1");
        assert_eq!(decode(&d).seq, None);
    }
}
