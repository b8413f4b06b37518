//! Sparkplug B as telemetry input: other edge nodes' DBIRTH and DDATA.
//!
//! Sparkplug devices report by exception: a DDATA carries only the metrics
//! that changed, usually by alias alone. So each device keeps the last value
//! of every model feature — set by its DBIRTH, updated by each DDATA — and
//! each DDATA becomes one sample of those current values, once every feature
//! is known. A DBIRTH declares the aliases and the starting values; it is
//! not itself a sample (a rebirth must not add a point to the window).
//!
//! On a sampling clock (`per_value`) each metric is a value of its own
//! instead, stamped with the metric's timestamp (else the payload's), and
//! the clock forms the samples: a DBIRTH's values and each DDATA's go in as
//! they are, in time order.
//!
//! Aliases live only in memory: a DDATA from a device whose DBIRTH lineguard
//! did not see is rejected (`unknown_alias`) until the device is born again.

use std::collections::HashMap;

use prost::Message;

use super::proto::{DataType, Payload};
use crate::ingest::decode::Decoded;
use crate::ingest::reject::{Reason, Rejection};

/// What a topic of a Sparkplug input carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Birth,
    Data,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Index into the model's features; `None` for a metric the model does not use.
    feature: Option<usize>,
    datatype: Option<DataType>,
}

#[derive(Debug)]
struct DeviceInput {
    aliases: HashMap<u64, Slot>,
    types: Vec<Option<DataType>>,
    values: Vec<Option<f64>>,
}

/// Decodes Sparkplug B payloads for one feature list.
#[derive(Debug)]
pub struct SparkplugInput {
    features: Vec<String>,
    index: HashMap<String, usize>,
    devices: HashMap<String, DeviceInput>,
    max_devices: usize,
    /// Each metric a value of its own, for the sampling clock.
    per_value: bool,
}

impl SparkplugInput {
    pub fn new(features: &[String], max_devices: usize) -> Self {
        Self {
            features: features.to_vec(),
            index: features.iter().enumerate().map(|(i, f)| (f.clone(), i)).collect(),
            devices: HashMap::new(),
            max_devices,
            per_value: false,
        }
    }

    /// Give each metric as a value of its own (a row holding only it, at the
    /// metric's timestamp), for a card with a sampling clock.
    pub fn per_value(mut self, per_value: bool) -> Self {
        self.per_value = per_value;
        self
    }

    /// Rows of one value each, in time order.
    fn values_out(&self, mut values: Vec<(Option<u64>, usize, f64)>, out: &mut Decoded) {
        values.sort_by_key(|(t, _, _)| *t);
        let n = self.features.len();
        for (t, f, v) in values {
            let start = out.values.len();
            out.values.resize(start + n, f64::NAN);
            out.values[start + f] = v;
            out.ts.push(t.map(|t| t as i64));
        }
    }

    /// Forget a device (evicted from the windows, or no longer publishing).
    pub fn forget(&mut self, device: &str) {
        self.devices.remove(device);
    }

    /// Decode one DBIRTH or DDATA of `device` into `out` (cleared first).
    pub fn decode(&mut self, kind: Kind, device: &str, payload: &[u8], out: &mut Decoded) {
        out.ts.clear();
        out.values.clear();
        out.rejects.clear();
        let p = match Payload::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                out.rejects.push(Rejection::new(
                    Reason::InvalidSparkplug,
                    format!("not a Sparkplug B payload: {e}"),
                ));
                return;
            }
        };
        match kind {
            Kind::Birth => self.birth(device, &p, out),
            Kind::Data => self.data(device, &p, out),
        }
    }

    fn birth(&mut self, device: &str, p: &Payload, out: &mut Decoded) {
        if !self.devices.contains_key(device) && self.devices.len() >= self.max_devices {
            // Bounded like the windows: drop one arbitrary device's aliases.
            if let Some(k) = self.devices.keys().next().cloned() {
                self.devices.remove(&k);
            }
        }
        let n = self.features.len();
        let mut d = DeviceInput { aliases: HashMap::new(), types: vec![None; n], values: vec![None; n] };
        let mut stamped = Vec::new();
        for m in &p.metrics {
            let Some(name) = m.name.as_deref() else { continue };
            let datatype = m.datatype.and_then(DataType::from_u32);
            let feature = self.index.get(name).copied();
            if let Some(alias) = m.alias {
                d.aliases.insert(alias, Slot { feature, datatype });
            }
            if let Some(f) = feature {
                d.types[f] = datatype;
                match m.number(datatype) {
                    Some(v) if v.is_finite() => {
                        d.values[f] = Some(v);
                        stamped.push((m.timestamp.or(p.timestamp), f, v));
                    }
                    Some(v) => out.rejects.push(Rejection::new(
                        Reason::NonFinite,
                        format!("DBIRTH metric `{name}` is {v}; the feature stays unknown"),
                    )),
                    None if m.is_null == Some(true) => {}
                    None => out.rejects.push(Rejection::new(
                        Reason::NonNumeric,
                        format!("DBIRTH metric `{name}` has no numeric value"),
                    )),
                }
            }
        }
        self.devices.insert(device.to_string(), d);
        if self.per_value {
            self.values_out(stamped, out);
        }
    }

    fn data(&mut self, device: &str, p: &Payload, out: &mut Decoded) {
        let n = self.features.len();
        let d = self.devices.entry(device.to_string()).or_insert_with(|| DeviceInput {
            aliases: HashMap::new(),
            types: vec![None; n],
            values: vec![None; n],
        });
        let mut newest: Option<u64> = None;
        let mut staged: Vec<(usize, f64, Option<u64>)> = Vec::with_capacity(p.metrics.len());
        for m in &p.metrics {
            let slot = match (m.name.as_deref(), m.alias) {
                (Some(name), _) => match self.index.get(name) {
                    Some(&f) => Slot {
                        feature: Some(f),
                        datatype: m.datatype.and_then(DataType::from_u32).or(d.types[f]),
                    },
                    None => continue,
                },
                (None, Some(alias)) => match d.aliases.get(&alias) {
                    Some(s) => *s,
                    None => {
                        out.rejects.push(Rejection::new(
                            Reason::UnknownAlias,
                            format!("DDATA alias {alias} was not declared by a DBIRTH of this device (waiting for its rebirth)"),
                        ));
                        return;
                    }
                },
                (None, None) => continue,
            };
            let Some(f) = slot.feature else { continue };
            let name = &self.features[f];
            match m.number(slot.datatype) {
                Some(v) if v.is_finite() => staged.push((f, v, m.timestamp.or(p.timestamp))),
                Some(v) => {
                    out.rejects.push(Rejection::new(Reason::NonFinite, format!("`{name}` is {v}")));
                    return;
                }
                None => {
                    out.rejects
                        .push(Rejection::new(Reason::NonNumeric, format!("`{name}` has no numeric value")));
                    return;
                }
            }
            if let Some(t) = m.timestamp {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
        if staged.is_empty() {
            return; // only metrics the model does not use: not a sample
        }
        for &(f, v, _) in &staged {
            d.values[f] = Some(v);
        }
        if self.per_value {
            let values = staged.into_iter().map(|(f, v, t)| (t, f, v)).collect();
            return self.values_out(values, out);
        }
        if let Some(missing) = d.values.iter().position(|v| v.is_none()) {
            out.rejects.push(Rejection::new(
                Reason::MissingFeature,
                format!("`{}` has no value yet (neither in a DBIRTH nor in a DDATA)", self.features[missing]),
            ));
            return;
        }
        out.values.extend(d.values.iter().map(|v| v.unwrap_or_default()));
        out.ts.push(newest.or(p.timestamp).map(|t| t as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparkplug::proto::{Metric, Value};

    fn features() -> Vec<String> {
        vec!["temp".into(), "speed".into()]
    }

    fn metric(name: Option<&str>, alias: u64, t: DataType, v: Value) -> Metric {
        Metric {
            name: name.map(String::from),
            alias: Some(alias),
            datatype: Some(t as u32),
            value: Some(v),
            timestamp: Some(100 + alias),
            ..Default::default()
        }
    }

    fn payload(metrics: Vec<Metric>) -> Vec<u8> {
        Payload { timestamp: Some(50), metrics, seq: Some(1), ..Default::default() }.encode_to_vec()
    }

    #[test]
    fn birth_then_data_by_alias_holds_the_other_values() {
        let mut s = SparkplugInput::new(&features(), 10);
        let mut out = Decoded::default();
        let birth = payload(vec![
            metric(Some("temp"), 1, DataType::Double, Value::Double(20.5)),
            metric(Some("speed"), 2, DataType::Int32, Value::Int((-3i32) as u32)),
            metric(Some("label"), 3, DataType::String, Value::String("x".into())),
        ]);
        s.decode(Kind::Birth, "d", &birth, &mut out);
        assert!(out.is_empty() && out.rejects.is_empty(), "a birth is not a sample");
        let data = payload(vec![metric(None, 2, DataType::Int32, Value::Int(7))]);
        s.decode(Kind::Data, "d", &data, &mut out);
        assert_eq!(out.values, [20.5, 7.0]);
        assert_eq!(out.ts, [Some(102)]);
        // An alias of an unused metric is skipped; nothing the model uses changed: no sample.
        s.decode(
            Kind::Data,
            "d",
            &payload(vec![metric(None, 3, DataType::String, Value::String("y".into()))]),
            &mut out,
        );
        assert!(out.is_empty() && out.rejects.is_empty());
    }

    #[test]
    fn unknown_alias_missing_value_and_garbage_are_rejected() {
        let mut s = SparkplugInput::new(&features(), 10);
        let mut out = Decoded::default();
        s.decode(
            Kind::Data,
            "d",
            &payload(vec![metric(None, 9, DataType::Float, Value::Float(1.0))]),
            &mut out,
        );
        assert_eq!(out.rejects[0].reason, Reason::UnknownAlias);
        s.decode(
            Kind::Data,
            "d",
            &payload(vec![metric(Some("temp"), 9, DataType::Float, Value::Float(1.0))]),
            &mut out,
        );
        assert_eq!(out.rejects[0].reason, Reason::MissingFeature, "speed never reported");
        s.decode(
            Kind::Data,
            "d",
            &payload(vec![metric(Some("speed"), 9, DataType::Float, Value::Float(f32::NAN))]),
            &mut out,
        );
        assert_eq!(out.rejects[0].reason, Reason::NonFinite);
        s.decode(
            Kind::Data,
            "d",
            &payload(vec![metric(Some("speed"), 9, DataType::String, Value::String("fast".into()))]),
            &mut out,
        );
        assert_eq!(out.rejects[0].reason, Reason::NonNumeric);
        s.decode(Kind::Data, "d", b"{\"json\": true}", &mut out);
        assert_eq!(out.rejects[0].reason, Reason::InvalidSparkplug);
        s.decode(
            Kind::Data,
            "d",
            &payload(vec![metric(Some("speed"), 9, DataType::Float, Value::Float(2.0))]),
            &mut out,
        );
        assert_eq!(out.values, [1.0, 2.0], "by name, no birth needed");
    }
}
