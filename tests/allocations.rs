//! The per-message path allocates nothing once a device is known: topic
//! matching, decoding the payload (lineguard's SPEC JSON, Telegraf's, the
//! per-value formats and Sparkplug B DDATA),
//! pushing the sample into the
//! device's window and copying a full window into the batch. Allocations are
//! counted on this thread by a counting global allocator.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::sync::Arc;

use counting_alloc::{counted, Counting};
use lineguard::ingest::decode::{Decoded, Decoder};
use lineguard::ingest::format::InputFormat;
use lineguard::ingest::topic::TopicTemplate;
use lineguard::model::card::Normalize;
use lineguard::pipeline::window::{Pushed, Windows};

#[global_allocator]
static ALLOC: Counting = Counting;

const DEVICES: usize = 500;
const WINDOW: usize = 16;
const FEATURES: usize = 8;

/// One pipeline's per-message state, as `pipeline.rs` keeps it.
struct Path {
    template: TopicTemplate,
    decoder: Decoder,
    decoded: Decoded,
    windows: Windows,
    evicted: Vec<String>,
    input: Vec<f32>,
    pending: Vec<(Arc<str>, i64)>,
}

impl Path {
    fn new(format: InputFormat) -> Self {
        let features: Vec<String> = lineguard::tools::sim::FEATURES.iter().map(|s| s.to_string()).collect();
        let norm = Normalize { mean: vec![100.0; FEATURES], std: vec![10.0; FEATURES] };
        Self {
            template: TopicTemplate::parse_input("plant/{line}/{machine}/telemetry").unwrap(),
            decoder: Decoder::new(&features).reading(format, format.default_ts_unit()),
            decoded: Decoded::default(),
            // A gap limit the stream never crosses: the check runs, no reset.
            windows: Windows::new(WINDOW, FEATURES, 1).normalizing(Some(norm)).resetting_after(Some(60_000)),
            evicted: Vec::new(),
            input: Vec::with_capacity(DEVICES * WINDOW * FEATURES),
            pending: Vec::with_capacity(DEVICES),
        }
    }

    /// One message, as the pipeline handles it; returns the windows it made ready.
    fn handle(&mut self, topic: &str, payload: &[u8], received_ms: i64) -> usize {
        let device = self.template.device_key(topic).expect("topic matches");
        self.decoder.decode(payload, &mut self.decoded);
        assert!(self.decoded.rejects.is_empty(), "{:?}", self.decoded.rejects);
        let mut ready = 0;
        for i in 0..self.decoded.len() {
            let values = &self.decoded.values[i * FEATURES..(i + 1) * FEATURES];
            let pushed =
                self.windows.push(&device, self.decoded.ts[i], received_ms, values, &mut self.evicted);
            if let Ok(Pushed::Ready { ts }) = pushed {
                let start = self.input.len();
                self.input.resize(start + WINDOW * FEATURES, 0.0);
                assert!(self.windows.write_window(&device, &mut self.input[start..]));
                self.pending.push((self.windows.key(&device).expect("known"), ts));
                ready += 1;
            }
        }
        ready
    }

    /// The end of a pipeline turn: the batch is scored and the changed
    /// windows go to the committer (both allocate, per turn, not per message).
    fn end_turn(&mut self) -> usize {
        self.pending.clear();
        self.input.clear();
        self.windows.take_dirty().len()
    }
}

fn topic(d: usize) -> String {
    format!("plant/line{}/m{d}/telemetry", d % 4)
}

/// One sample in `format`.
fn sample(format: InputFormat, ts: i64, values: &[f64; FEATURES]) -> Vec<u8> {
    match format {
        InputFormat::Telegraf => {
            let fields: serde_json::Map<String, serde_json::Value> = lineguard::tools::sim::FEATURES
                .iter()
                .zip(values)
                .map(|(f, v)| (f.to_string(), (*v).into()))
                .collect();
            serde_json::json!({"fields": fields, "name": "press", "tags": {"host": "gw01"}, "timestamp": ts as f64 / 1000.0})
                .to_string()
                .into_bytes()
        }
        _ => lineguard::tools::sim::payload(ts, values),
    }
}

/// Several samples in one message of `format`.
fn batch_of(format: InputFormat, samples: Vec<Vec<u8>>) -> Vec<u8> {
    let (open, close) = match format {
        InputFormat::Telegraf => (&b"{\"metrics\":["[..], &b"]}"[..]),
        // SPEC: a JSON array of samples is a batch, in order.
        _ => (&b"["[..], &b"]"[..]),
    };
    let mut out = open.to_vec();
    out.extend(samples.join(&b","[..]));
    out.extend(close);
    out
}

/// Payloads of `rounds` rounds, one message per device each, made before counting.
fn payloads(format: InputFormat, rounds: usize, first_ts: i64, batch: usize) -> Vec<Vec<Vec<u8>>> {
    (0..rounds)
        .map(|r| {
            (0..DEVICES)
                .map(|d| {
                    let samples: Vec<Vec<u8>> = (0..batch)
                        .map(|s| {
                            let ts = first_ts + ((r * batch + s) as i64) * 100;
                            let v = (d + r + s) as f64;
                            sample(
                                format,
                                ts,
                                &[v, v + 1.0, v + 2.0, v + 3.0, v + 4.0, v + 5.0, v + 6.0, 0.5],
                            )
                        })
                        .collect();
                    if batch == 1 {
                        samples.into_iter().next().unwrap()
                    } else {
                        batch_of(format, samples)
                    }
                })
                .collect()
        })
        .collect()
}

fn steady_state_allocations(format: InputFormat, batch: usize) {
    let mut path = Path::new(format);
    let topics: Vec<String> = (0..DEVICES).map(topic).collect();
    let warm_rounds = WINDOW.div_ceil(batch) + 1;
    let measured_rounds = 8;
    let all = payloads(format, warm_rounds + measured_rounds, 1_732_400_000_000, batch);
    let (warm, measured) = all.split_at(warm_rounds);

    // Warm-up: devices are new, windows fill, buffers grow to their size.
    for round in warm {
        for (d, payload) in round.iter().enumerate() {
            path.handle(&topics[d], payload, 0);
        }
        path.end_turn();
    }

    let mut ready = 0;
    let mut allocations = 0;
    for round in measured {
        let (n, a) =
            counted(|| round.iter().enumerate().map(|(d, p)| path.handle(&topics[d], p, 0)).sum::<usize>());
        ready += n;
        allocations += a;
        assert_eq!(path.end_turn(), DEVICES, "every device's window changed this turn");
    }
    let messages = measured_rounds * DEVICES;
    assert_eq!(ready, messages * batch, "every sample completes a window (hop 1, windows full)");
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in {messages} {format:?} messages ({batch} samples each): topic match, decode and window must not allocate"
    );
}

#[test]
fn topic_decode_and_window_allocate_nothing_per_message() {
    steady_state_allocations(InputFormat::Lineguard, 1);
}

#[test]
fn a_batch_payload_allocates_nothing_per_sample() {
    steady_state_allocations(InputFormat::Lineguard, 4);
}

#[test]
fn telegraf_metrics_allocate_nothing_per_message() {
    steady_state_allocations(InputFormat::Telegraf, 1);
    steady_state_allocations(InputFormat::Telegraf, 4);
}

#[test]
fn matching_a_topic_allocates_nothing_whatever_the_template() {
    // Placeholders that are not adjacent levels make an owned device key,
    // but matching (what the router does per message and pipeline) must not.
    let split = TopicTemplate::parse_input("site/{site}/raw/{machine}").unwrap();
    let adjacent = TopicTemplate::parse_input("plant/{line}/{machine}/telemetry").unwrap();
    let (hits, allocations) = counted(|| {
        let mut hits = 0;
        for topic in ["site/a/raw/m1", "site/b/raw/m2", "plant/l1/m1/telemetry", "plant/l1/m1/status", "x"] {
            hits += split.matches(topic) as usize + adjacent.matches(topic) as usize;
        }
        hits
    });
    assert_eq!(hits, 3);
    assert_eq!(allocations, 0, "matching allocated {allocations} times");
    // The counter does count: an owned key is one allocation at least.
    let (key, allocations) = counted(|| split.device_key("site/a/raw/m1").map(|k| k.into_owned()));
    assert_eq!(key.as_deref(), Some("a/m1"));
    assert!(allocations > 0, "the counting allocator saw no allocation");
}

#[test]
fn tags_and_the_sampling_clock_allocate_nothing_per_value() {
    clocked_allocations(Clocked::Tag);
}

#[test]
fn kepware_records_allocate_nothing_per_value() {
    clocked_allocations(Clocked::Kepware);
}

#[test]
fn opcua_data_points_allocate_nothing_per_value() {
    clocked_allocations(Clocked::Opcua);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Clocked {
    Tag,
    Kepware,
    Opcua,
}

/// Values one per message (`tag`), or a device's eight per message
/// (`kepware`, each record naming its device; `opcua-json`, RFC 3339 source
/// timestamps), through the sampling clock.
fn clocked_allocations(format: Clocked) {
    use lineguard::ingest::format::TsUnit;
    use lineguard::ingest::kepware::{self, TagId};
    use lineguard::ingest::tag::{self, TagKeys};
    use lineguard::model::card::SampleClock;

    let features: Vec<String> = lineguard::tools::sim::FEATURES.iter().map(|s| s.to_string()).collect();
    let template = TopicTemplate::parse_input("uns/{line}/{machine}/{feature}")
        .unwrap()
        .naming_features_by("feature")
        .unwrap();
    let decoder = Decoder::new(&features);
    let keys = TagKeys::default();
    let clock = SampleClock { period_ms: 100, stale_after_ms: 300 };
    let mut windows = Windows::new(WINDOW, FEATURES, 1).on_clock(Some(clock));
    let mut decoded = Decoded::default();
    let mut evicted = Vec::new();
    let mut input = vec![0f32; WINDOW * FEATURES];
    // Per grid point, per device, each tag a little before the point.
    let rounds = WINDOW + 2 + 8;
    let tag_messages: Vec<Vec<(String, Vec<u8>)>> = (0..rounds)
        .map(|k| {
            (0..DEVICES)
                .flat_map(|d| {
                    features.iter().enumerate().map(move |(f, name)| {
                        let ts = 1_732_400_000_000 + (k as i64) * 100 - 40 + f as i64;
                        let topic = format!("uns/line{}/m{d}/{name}", d % 4);
                        (topic, format!(r#"{{"value": {}, "timestamp": {ts}}}"#, d + f + k).into_bytes())
                    })
                })
                .collect()
        })
        .collect();
    // The same values as IoT Gateway messages, one per device and grid point.
    let kepware_messages: Vec<Vec<(String, Vec<u8>)>> = (0..rounds)
        .map(|k| {
            (0..DEVICES)
                .map(|d| {
                    let records: Vec<String> = features
                        .iter()
                        .enumerate()
                        .map(|(f, name)| {
                            let ts = 1_732_400_000_000 + (k as i64) * 100 - 40 + f as i64;
                            format!(
                                r#"{{"id":"line{}.m{d}.{name}","v":{},"q":true,"t":{ts}}}"#,
                                d % 4,
                                d + f + k
                            )
                        })
                        .collect();
                    (
                        "iotgateway".to_string(),
                        format!(r#"{{"values":[{}]}}"#, records.join(",")).into_bytes(),
                    )
                })
                .collect()
        })
        .collect();
    // The simulator's OPC UA connector messages, one per machine and grid point.
    let opcua_messages: Vec<Vec<(String, Vec<u8>)>> = (0..rounds)
        .map(|k| {
            (0..DEVICES)
                .flat_map(|d| {
                    let m = lineguard::tools::sim::Machine {
                        line: format!("line{}", d % 4),
                        name: format!("m{d}"),
                        load: 0.0,
                        fault: None,
                    };
                    let v = (d + k) as f64;
                    let values = [v, v + 1.0, v + 2.0, v + 3.0, v + 4.0, v + 5.0, v + 6.0, 0.5];
                    let ts = 1_732_400_000_000 + (k as i64) * 100 - 40;
                    lineguard::tools::sim::Format::OpcuaJson.messages(&m, ts, &values)
                })
                .collect()
        })
        .collect();
    let opcua_template = TopicTemplate::parse_input("azure-iot-operations/data/{line}/{machine}").unwrap();
    let messages = match format {
        Clocked::Tag => tag_messages,
        Clocked::Kepware => kepware_messages,
        Clocked::Opcua => opcua_messages,
    };
    let tag_id = TagId::parse("{line}.{machine}.{feature}").unwrap();
    let mut key = String::new();
    let mut round = |windows: &mut Windows, msgs: &[(String, Vec<u8>)]| {
        let mut ready = 0;
        for (topic, payload) in msgs {
            let template = if format == Clocked::Opcua { &opcua_template } else { &template };
            match format {
                Clocked::Kepware => kepware::decode(&decoder, &tag_id, TsUnit::Ms, "", payload, &mut decoded),
                Clocked::Opcua => {
                    lineguard::ingest::opcua::decode(&decoder, TsUnit::Ms, payload, &mut decoded)
                }
                Clocked::Tag => {
                    let f = decoder.feature_index(template.feature(topic).unwrap()).unwrap();
                    tag::decode(&keys, TsUnit::Ms, f, FEATURES, payload, &mut decoded);
                }
            }
            assert!(decoded.rejects.is_empty(), "{:?}", decoded.rejects);
            for i in 0..decoded.len() {
                // As the worker does: the row's key into a reused buffer.
                key.clear();
                match decoded.key(i) {
                    Some(k) => key.push_str(k),
                    None => key.push_str(&template.device_key(topic).expect("matches")),
                }
                let ts = decoded.ts[i].unwrap();
                windows.admit(&key, ts, 0, &mut evicted).unwrap();
                while let Some(p) = windows.advance(&key, ts) {
                    if let Pushed::Ready { .. } = p {
                        assert!(windows.write_window(&key, &mut input));
                        ready += 1;
                    }
                }
                windows.hold(&key, ts, &decoded.values[i * FEATURES..(i + 1) * FEATURES]);
            }
        }
        ready
    };
    let (warm, measured) = messages.split_at(WINDOW + 2);
    for msgs in warm {
        round(&mut windows, msgs);
        windows.take_dirty();
    }
    let mut ready = 0;
    let mut allocations = 0;
    for msgs in measured {
        let (n, a) = counted(|| round(&mut windows, msgs));
        ready += n;
        allocations += a;
        windows.take_dirty();
    }
    assert_eq!(ready, measured.len() * DEVICES, "each grid point completes a window per device");
    assert_eq!(
        allocations,
        0,
        "{allocations} allocations in {} values ({format:?})",
        measured.len() * DEVICES * FEATURES
    );
}

/// Sparkplug B DDATA by exception (two metrics by alias), after each
/// device's DBIRTH: the device key from the topic (its levels are not
/// adjacent), the payload read in place and the sample pushed allocate nothing.
#[test]
fn sparkplug_ddata_allocates_nothing_per_message() {
    use lineguard::sparkplug::input::{Kind, SparkplugInput};
    use lineguard::sparkplug::proto::{DataType, Metric, Payload, Value};
    use prost::Message;

    let features: Vec<String> = lineguard::tools::sim::FEATURES.iter().map(|s| s.to_string()).collect();
    let template = TopicTemplate::parse_input("spBv1.0/{group}/DDATA/{node}/{device}").unwrap();
    let births = TopicTemplate::parse_input("spBv1.0/{group}/DBIRTH/{node}/{device}").unwrap();
    let norm = Normalize { mean: vec![100.0; FEATURES], std: vec![10.0; FEATURES] };
    let mut windows = Windows::new(WINDOW, FEATURES, 1).normalizing(Some(norm));
    let mut input = SparkplugInput::new(&features, DEVICES);
    let mut decoded = Decoded::default();
    let (mut key, mut evicted) = (String::new(), Vec::new());
    let metric = |name: Option<&str>, alias: u64, v: f64, ts: u64| Metric {
        name: name.map(String::from),
        alias: Some(alias),
        timestamp: Some(ts),
        datatype: Some(DataType::Double as u32),
        value: Some(Value::Double(v)),
        ..Default::default()
    };
    let t0 = 1_732_400_000_000u64;
    for d in 0..DEVICES {
        let birth = Payload {
            timestamp: Some(t0),
            metrics: features
                .iter()
                .enumerate()
                .map(|(i, f)| metric(Some(f), i as u64, i as f64, t0))
                .collect(),
            seq: Some(0),
            ..Default::default()
        };
        assert!(births.device_key_into(&format!("spBv1.0/line{}/DBIRTH/gw/m{d}", d % 4), &mut key));
        input.decode(Kind::Birth, &key, &birth.encode_to_vec(), &mut decoded);
        assert!(decoded.rejects.is_empty(), "{:?}", decoded.rejects);
    }
    let topics: Vec<String> = (0..DEVICES).map(|d| format!("spBv1.0/line{}/DDATA/gw/m{d}", d % 4)).collect();
    let rounds = WINDOW + 1 + 8;
    let data: Vec<Vec<Vec<u8>>> = (1..=rounds as u64)
        .map(|r| {
            (0..DEVICES)
                .map(|d| {
                    let ts = t0 + r * 100;
                    let v = (d as u64 + r) as f64;
                    let metrics = vec![metric(None, 3, v, ts), metric(None, 6, v + 1.0, ts)];
                    Payload { timestamp: Some(ts), metrics, seq: Some(r % 256), ..Default::default() }
                        .encode_to_vec()
                })
                .collect()
        })
        .collect();
    let (warm, measured) = data.split_at(WINDOW + 1);
    let mut handle = |windows: &mut Windows, topic: &str, payload: &[u8]| -> usize {
        assert!(template.device_key_into(topic, &mut key));
        input.decode(Kind::Data, &key, payload, &mut decoded);
        assert!(decoded.rejects.is_empty(), "{:?}", decoded.rejects);
        let pushed = windows.push(&key, decoded.ts[0], 0, &decoded.values, &mut evicted);
        usize::from(matches!(pushed, Ok(Pushed::Ready { .. })))
    };
    for round in warm {
        for (d, p) in round.iter().enumerate() {
            handle(&mut windows, &topics[d], p);
        }
        windows.take_dirty();
    }
    let (mut ready, mut allocations) = (0, 0);
    for round in measured {
        let (n, a) = counted(|| {
            round.iter().enumerate().map(|(d, p)| handle(&mut windows, &topics[d], p)).sum::<usize>()
        });
        ready += n;
        allocations += a;
        windows.take_dirty();
    }
    assert_eq!(ready, measured.len() * DEVICES, "every DDATA completes a window");
    assert_eq!(
        allocations,
        0,
        "{allocations} allocations in {} Sparkplug DDATA messages",
        measured.len() * DEVICES
    );
}
