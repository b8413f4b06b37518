//! The per-message cost of decode + window, per input format.
//!
//!     cargo bench --bench decode
//!
//! One telemetry message of 8 features, in each JSON input format
//! (lineguard's SPEC payload, Telegraf's metric), decoded into a reused
//! buffer and pushed, normalized, into its device's window; 1000 devices
//! round robin, window 16; every full window is also copied out (the
//! batch input). Peer: `serde_json::from_slice::<serde_json::Value>` of the
//! same payload — parsing alone, the floor for any JSON decoder. Also prints
//! the allocations per message of the lineguard path (a counting allocator;
//! `tests/allocations.rs` asserts that there are none). Last, the drift
//! update of one sample (`pipeline::drift`), against the message path it
//! rides on.

#[path = "../tests/support/counting_alloc.rs"]
mod counting_alloc;

use std::time::Instant;

use lineguard::ingest::decode::{Decoded, Decoder};
use lineguard::ingest::format::{InputFormat, TsUnit};
use lineguard::ingest::topic::TopicTemplate;
use lineguard::model::card::Normalize;
use lineguard::pipeline::window::{Pushed, Windows};

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

const VALUES: &str = "\"spindle_speed\":1203.5,\"feed_rate\":351.25,\"motor_temp\":61.2,\"vibration_rms\":2.05,\
                      \"motor_current\":12.3,\"hydraulic_pressure\":149.8,\"torque\":45.6,\"ambient_humidity\":44.9";

/// 1000 payloads of one sample each in `format`, timestamps 1 ms apart.
fn payloads(format: InputFormat) -> Vec<Vec<u8>> {
    (0..1000i64)
        .map(|i| {
            let ts = 1732400000000 + i;
            match format {
                InputFormat::Telegraf => format!(
                    "{{\"fields\":{{{VALUES}}},\"name\":\"press\",\"tags\":{{\"host\":\"gw01\"}},\"timestamp\":{}.{:03}}}",
                    ts / 1000,
                    ts % 1000
                ),
                _ => format!("{{\"ts\":{ts},\"values\":{{{VALUES}}}}}"),
            }
            .into_bytes()
        })
        .collect()
}

/// ns per message of decode + window push (+ copy-out), of the bare parse,
/// and allocations per message of the first.
fn measure(format: InputFormat, payloads: &[Vec<u8>]) -> (f64, f64, f64) {
    let features: Vec<String> = lineguard::tools::sim::FEATURES.iter().map(|s| s.to_string()).collect();
    let devices: Vec<String> = (0..1000).map(|i| format!("line{}/m{i}", i % 10)).collect();
    let decoder = Decoder::new(&features).reading(format, format.default_ts_unit());
    let norm = Normalize { mean: vec![0.0; 8], std: vec![1.0; 8] };
    let mut windows = Windows::new(16, 8, 1).normalizing(Some(norm));
    let mut decoded = Decoded::default();
    let mut row = vec![0f32; 128];
    let rounds = 300usize;
    let n = rounds * devices.len();

    let mut evicted = Vec::new();
    let mut round = |r: usize| {
        let mut ready = 0usize;
        for (d, device) in devices.iter().enumerate() {
            decoder.decode(&payloads[(r + d) % payloads.len()], &mut decoded);
            assert_eq!(decoded.len(), 1, "{:?}", decoded.rejects);
            let ts = Some(1732400000000 + (r as i64) * 100);
            if let Ok(Pushed::Ready { .. }) = windows.push(device, ts, 0, &decoded.values[..8], &mut evicted)
            {
                windows.write_window(device, &mut row);
                ready += 1;
            }
        }
        ready
    };
    // Round 0 meets every device for the first time (untimed, uncounted).
    round(0);
    let t = Instant::now();
    let (ready, allocations) = counting_alloc::counted(|| (1..=rounds).map(&mut round).sum::<usize>());
    let ours = t.elapsed().as_secs_f64() * 1e9 / n as f64;

    let t = Instant::now();
    let mut sink = 0usize;
    for r in 0..rounds {
        for d in 0..devices.len() {
            let v: serde_json::Value = serde_json::from_slice(&payloads[(r + d) % payloads.len()]).unwrap();
            sink += v.as_object().map_or(0, |o| o.len());
        }
    }
    let peer = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    assert!(ready > 0 && sink > 0);
    (ours, peer, allocations as f64 / n as f64)
}

/// Per value, the cost of reading a one-value message (`tag`), or a record
/// of an eight-record message (`kepware`, `opcua-json`), through the
/// sampling clock (admit, advance, hold, and the window push a grid point
/// makes), against the bare `serde_json::Value` parse of the same payloads.
/// Returns (ns per value, parse ns per value, allocations per value, bytes
/// of one message).
fn measure_clocked(format: InputFormat) -> (f64, f64, f64, usize) {
    use lineguard::ingest::decode::Decoded;
    use lineguard::model::card::SampleClock;
    use lineguard::tools::sim;
    let features: Vec<String> = sim::FEATURES.iter().map(|s| s.to_string()).collect();
    let sim_format = match format {
        InputFormat::Tag => sim::Format::Tag,
        InputFormat::Kepware => sim::Format::Kepware,
        _ => sim::Format::OpcuaJson,
    };
    let line = sim::line(1000);
    let values = [1203.5, 351.25, 61.2, 2.05, 12.3, 149.8, 45.6, 44.9];
    // Round k: every machine's values at 100 k ms.
    let messages: Vec<Vec<(String, Vec<u8>)>> = (0..60i64)
        .map(|k| {
            line.iter().flat_map(|m| sim_format.messages(m, 1_732_400_000_000 + 100 * k, &values)).collect()
        })
        .collect();
    let keys_text = sim_format.pipeline_keys();
    let topic = keys_text.lines().next().unwrap().split('"').nth(1).unwrap().to_string();
    let template = match format {
        InputFormat::Tag => {
            TopicTemplate::parse_input(&topic).unwrap().naming_features_by("feature").unwrap()
        }
        InputFormat::Kepware => {
            TopicTemplate::parse_input_naming_devices(&topic, &["machine".to_string()]).unwrap()
        }
        _ => TopicTemplate::parse_input(&topic).unwrap(),
    };
    let decoder = Decoder::new(&features);
    let tag_keys = lineguard::ingest::tag::TagKeys::default();
    let tag_id = lineguard::ingest::kepware::TagId::parse("{machine}.{feature}").unwrap();
    let clock = SampleClock { period_ms: 100, stale_after_ms: 300 };
    let norm = Normalize { mean: vec![0.0; 8], std: vec![1.0; 8] };
    let mut windows = Windows::new(16, 8, 1).normalizing(Some(norm)).on_clock(Some(clock));
    let mut decoded = Decoded::default();
    let (mut evicted, mut row, mut key) = (Vec::new(), vec![0f32; 128], String::new());
    let mut round = |windows: &mut Windows, msgs: &[(String, Vec<u8>)]| {
        let mut n = 0usize;
        for (topic, payload) in msgs {
            let device = template.device_key(topic).unwrap();
            match format {
                InputFormat::Tag => {
                    let f = decoder.feature_index(template.feature(topic).unwrap()).unwrap();
                    lineguard::ingest::tag::decode(&tag_keys, TsUnit::Ms, f, 8, payload, &mut decoded)
                }
                InputFormat::Kepware => lineguard::ingest::kepware::decode(
                    &decoder,
                    &tag_id,
                    TsUnit::Ms,
                    &device,
                    payload,
                    &mut decoded,
                ),
                _ => lineguard::ingest::opcua::decode(&decoder, TsUnit::Ms, payload, &mut decoded),
            }
            assert!(decoded.rejects.is_empty(), "{:?}", decoded.rejects);
            for i in 0..decoded.len() {
                key.clear();
                key.push_str(decoded.key(i).unwrap_or(&device));
                let ts = decoded.ts[i].unwrap();
                windows.admit(&key, ts, 0, &mut evicted).unwrap();
                while let Some(p) = windows.advance(&key, ts) {
                    if let Pushed::Ready { .. } = p {
                        windows.write_window(&key, &mut row);
                    }
                }
                windows.hold(&key, ts, &decoded.values[i * 8..(i + 1) * 8]);
                n += 1;
            }
        }
        n
    };
    for msgs in &messages[..20] {
        round(&mut windows, msgs);
        windows.take_dirty();
    }
    // Timed: the reading and the clock; not the snapshots the committer takes.
    let (mut n, mut allocations, mut spent) = (0usize, 0u64, 0f64);
    for msgs in &messages[20..] {
        let t = Instant::now();
        let (k, a) = counting_alloc::counted(|| round(&mut windows, msgs));
        spent += t.elapsed().as_secs_f64();
        n += k;
        allocations += a;
        windows.take_dirty();
    }
    let ours = spent * 1e9 / n as f64;
    let t = Instant::now();
    let mut sink = 0usize;
    for msgs in &messages[20..] {
        for (_, payload) in msgs {
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            sink += v.as_object().map_or(1, |o| o.len());
        }
    }
    let peer = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    assert!(sink > 0 && n > 0);
    (ours, peer, allocations as f64 / n as f64, messages[0][0].1.len())
}

fn main() {
    println!("decode + window, one sample of 8 features per message, 1000 devices, window 16");
    println!(
        "{:<10} {:>6} {:>22} {:>22} {:>8} {:>16}",
        "format", "bytes", "lineguard ns/message", "Value parse ns/message", "ratio", "allocations/msg"
    );
    for format in [InputFormat::Lineguard, InputFormat::Telegraf] {
        let payloads = payloads(format);
        let (ours, peer, allocations) = measure(format, &payloads);
        println!(
            "{:<10} {:>6} {ours:>22.0} {peer:>22.0} {:>8.2} {allocations:>16.2}",
            format.as_str(),
            payloads[0].len(),
            ours / peer
        );
    }
    println!();
    println!("single values through the sampling clock (100 ms grid), 1000 machines x 8 features, window 16");
    println!(
        "{:<10} {:>6} {:>22} {:>22} {:>8} {:>16}",
        "format", "bytes", "lineguard ns/value", "Value parse ns/value", "ratio", "allocations/val"
    );
    for format in [InputFormat::Tag, InputFormat::Kepware, InputFormat::OpcuaJson] {
        let (ours, peer, allocations, bytes) = measure_clocked(format);
        println!(
            "{:<10} {bytes:>6} {ours:>22.0} {peer:>22.0} {:>8.2} {allocations:>16.2}",
            format.as_str(),
            ours / peer
        );
    }
    println!();
    let payloads = payloads(InputFormat::Lineguard);
    let (message, _, _) = measure(InputFormat::Lineguard, &payloads);
    let drift = drift_ns_per_sample();
    println!("drift update, one sample of 8 features (with a [range]): {drift:.1} ns");
    println!("  against the lineguard message path above ({message:.0} ns): {:.3} of it", drift / message);
}

/// ns per sample of the drift update (8 features, normalization and range).
fn drift_ns_per_sample() -> f64 {
    use lineguard::model::card::FeatureRange;
    use lineguard::pipeline::drift::{Drift, DriftSettings};
    let norm = Normalize { mean: vec![100.0; 8], std: vec![10.0; 8] };
    let range = FeatureRange { min: vec![0.0; 8], max: vec![1000.0; 8] };
    let mut d = Drift::new(DriftSettings::defaults("bench".into()), 8, Some(norm), Some(range));
    let samples: Vec<[f64; 8]> = (0..1000).map(|i| [100.0 + (i % 7) as f64; 8]).collect();
    let rounds = 2000;
    let t = Instant::now();
    for _ in 0..rounds {
        for s in &samples {
            d.observe(std::hint::black_box(s));
        }
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / (rounds * samples.len()) as f64;
    assert!(std::hint::black_box(d.current())[0].is_some());
    ns
}
