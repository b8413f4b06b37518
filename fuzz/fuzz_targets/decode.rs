//! Any payload: the decoder returns samples and rejections, never panics, and
//! every accepted sample has every feature, finite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lineguard::ingest::decode::{Decoded, Decoder};

fuzz_target!(|data: &[u8]| {
    let features: Vec<String> = ["a", "b", "spindle_speed"].iter().map(|s| s.to_string()).collect();
    let decoder = Decoder::with_limits(&features, 64, 32, 16);
    let mut out = Decoded::default();
    decoder.decode(data, &mut out);
    assert_eq!(out.values.len(), out.ts.len() * features.len());
    assert!(out.values.iter().all(|v| v.is_finite()));
    assert!(out.ts.len() <= 64);
    assert!(out.ts.iter().flatten().all(|t| *t >= 0));
});
