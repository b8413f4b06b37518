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
//! `tests/allocations.rs` asserts that there are none).

#[path = "../tests/support/counting_alloc.rs"]
mod counting_alloc;

use std::time::Instant;

use lineguard::ingest::decode::{Decoded, Decoder};
use lineguard::ingest::format::InputFormat;
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
}
