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

use super::proto::{read_payload, DataType, WireError};
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

impl DeviceInput {
    fn new(features: usize) -> Self {
        Self { aliases: HashMap::new(), types: vec![None; features], values: vec![None; features] }
    }
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
    /// The values one payload carries: (timestamp, feature, value), reused.
    staged: Vec<(Option<u64>, usize, f64)>,
}

impl SparkplugInput {
    pub fn new(features: &[String], max_devices: usize) -> Self {
        Self {
            features: features.to_vec(),
            index: features.iter().enumerate().map(|(i, f)| (f.clone(), i)).collect(),
            devices: HashMap::new(),
            max_devices,
            per_value: false,
            staged: Vec::new(),
        }
    }

    /// Give each metric as a value of its own (a row holding only it, at the
    /// metric's timestamp), for a card with a sampling clock.
    pub fn per_value(mut self, per_value: bool) -> Self {
        self.per_value = per_value;
        self
    }

    /// Rows of one value each, in time order.
    fn values_out(features: usize, values: &mut [(Option<u64>, usize, f64)], out: &mut Decoded) {
        values.sort_by_key(|(t, _, _)| *t);
        for &(t, f, v) in values.iter() {
            let start = out.values.len();
            out.values.resize(start + features, f64::NAN);
            out.values[start + f] = v;
            out.ts.push(t.map(|t| t as i64));
        }
    }

    /// Forget a device (evicted from the windows, or no longer publishing).
    pub fn forget(&mut self, device: &str) {
        self.devices.remove(device);
    }

    /// Decode one DBIRTH or DDATA of `device` into `out` (cleared first).
    /// A DDATA of a known device allocates nothing: the payload is read in
    /// place (`proto::read_payload`), not decoded into messages.
    pub fn decode(&mut self, kind: Kind, device: &str, payload: &[u8], out: &mut Decoded) {
        out.ts.clear();
        out.values.clear();
        out.rejects.clear();
        let mut staged = std::mem::take(&mut self.staged);
        staged.clear();
        let read = match kind {
            Kind::Birth => self.birth(device, payload, &mut staged, out),
            Kind::Data => self.data(device, payload, &mut staged, out),
        };
        if let Err(e) = read {
            out.rejects
                .push(Rejection::new(Reason::InvalidSparkplug, format!("not a Sparkplug B payload: {e}")));
        }
        self.staged = staged;
    }

    fn birth(
        &mut self,
        device: &str,
        payload: &[u8],
        stamped: &mut Vec<(Option<u64>, usize, f64)>,
        out: &mut Decoded,
    ) -> Result<(), WireError> {
        let n = self.features.len();
        let mut d = DeviceInput::new(n);
        let index = &self.index;
        let rejects = &mut out.rejects;
        read_payload(payload, |payload_ts, m| {
            let Some(name) = m.name else { return };
            let datatype = m.datatype.and_then(DataType::from_u32);
            let feature = index.get(name).copied();
            if let Some(alias) = m.alias {
                d.aliases.insert(alias, Slot { feature, datatype });
            }
            let Some(f) = feature else { return };
            d.types[f] = datatype;
            match m.number(datatype) {
                Some(v) if v.is_finite() => {
                    d.values[f] = Some(v);
                    stamped.push((m.timestamp.or(payload_ts), f, v));
                }
                Some(v) => rejects.push(Rejection::new(
                    Reason::NonFinite,
                    format!("DBIRTH metric `{name}` is {v}; the feature stays unknown"),
                )),
                None if m.is_null == Some(true) => {}
                None => rejects.push(Rejection::new(
                    Reason::NonNumeric,
                    format!("DBIRTH metric `{name}` has no numeric value"),
                )),
            }
        })?;
        if !self.devices.contains_key(device) && self.devices.len() >= self.max_devices {
            // Bounded like the windows: drop one arbitrary device's aliases.
            if let Some(k) = self.devices.keys().next().cloned() {
                self.devices.remove(&k);
            }
        }
        self.devices.insert(device.to_string(), d);
        if self.per_value {
            Self::values_out(n, stamped, out);
        }
        Ok(())
    }

    fn data(
        &mut self,
        device: &str,
        payload: &[u8],
        staged: &mut Vec<(Option<u64>, usize, f64)>,
        out: &mut Decoded,
    ) -> Result<(), WireError> {
        let n = self.features.len();
        if !self.devices.contains_key(device) {
            self.devices.insert(device.to_string(), DeviceInput::new(n));
        }
        let d = self.devices.get_mut(device).expect("inserted above");
        let (index, features) = (&self.index, &self.features);
        let mut newest: Option<u64> = None;
        // The first reason the message is refused; the rest of it is skipped.
        let mut refused: Option<Rejection> = None;
        let payload_ts = read_payload(payload, |_, m| {
            if refused.is_some() {
                return;
            }
            let slot = match (m.name, m.alias) {
                (Some(name), _) => match index.get(name) {
                    Some(&f) => Slot {
                        feature: Some(f),
                        datatype: m.datatype.and_then(DataType::from_u32).or(d.types[f]),
                    },
                    None => return,
                },
                (None, Some(alias)) => match d.aliases.get(&alias) {
                    Some(s) => *s,
                    None => {
                        refused = Some(Rejection::new(
                            Reason::UnknownAlias,
                            format!("DDATA alias {alias} was not declared by a DBIRTH of this device (waiting for its rebirth)"),
                        ));
                        return;
                    }
                },
                (None, None) => return,
            };
            let Some(f) = slot.feature else { return };
            let name = &features[f];
            match m.number(slot.datatype) {
                Some(v) if v.is_finite() => staged.push((m.timestamp, f, v)),
                Some(v) => refused = Some(Rejection::new(Reason::NonFinite, format!("`{name}` is {v}"))),
                None => {
                    refused =
                        Some(Rejection::new(Reason::NonNumeric, format!("`{name}` has no numeric value")))
                }
            }
            if let Some(t) = m.timestamp {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        })?;
        if let Some(r) = refused {
            out.rejects.push(r);
            return Ok(());
        }
        if staged.is_empty() {
            return Ok(()); // only metrics the model does not use: not a sample
        }
        for &(_, f, v) in staged.iter() {
            d.values[f] = Some(v);
        }
        if self.per_value {
            for s in staged.iter_mut() {
                s.0 = s.0.or(payload_ts);
            }
            Self::values_out(n, staged, out);
            return Ok(());
        }
        if let Some(missing) = d.values.iter().position(|v| v.is_none()) {
            out.rejects.push(Rejection::new(
                Reason::MissingFeature,
                format!("`{}` has no value yet (neither in a DBIRTH nor in a DDATA)", self.features[missing]),
            ));
            return Ok(());
        }
        out.values.extend(d.values.iter().map(|v| v.unwrap_or_default()));
        out.ts.push(newest.or(payload_ts).map(|t| t as i64));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparkplug::proto::{Metric, Payload, Value};
    use prost::Message;

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
