//! The per-message path allocates nothing once a device is known: topic
//! matching, decoding the SPEC JSON payload, pushing the sample into the
//! device's window and copying a full window into the batch. Allocations are
//! counted on this thread by a counting global allocator.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::sync::Arc;

use counting_alloc::{counted, Counting};
use lineguard::ingest::decode::{Decoded, Decoder};
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
    fn new() -> Self {
        let features: Vec<String> = lineguard::tools::sim::FEATURES.iter().map(|s| s.to_string()).collect();
        let norm = Normalize { mean: vec![100.0; FEATURES], std: vec![10.0; FEATURES] };
        Self {
            template: TopicTemplate::parse_input("plant/{line}/{machine}/telemetry").unwrap(),
            decoder: Decoder::new(&features),
            decoded: Decoded::default(),
            windows: Windows::new(WINDOW, FEATURES, 1).normalizing(Some(norm)),
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

/// Payloads of `rounds` rounds, one message per device each, made before counting.
fn payloads(rounds: usize, first_ts: i64, batch: usize) -> Vec<Vec<Vec<u8>>> {
    (0..rounds)
        .map(|r| {
            (0..DEVICES)
                .map(|d| {
                    let samples: Vec<Vec<u8>> = (0..batch)
                        .map(|s| {
                            let ts = first_ts + ((r * batch + s) as i64) * 100;
                            let v = (d + r + s) as f64;
                            lineguard::tools::sim::payload(
                                ts,
                                &[v, v + 1.0, v + 2.0, v + 3.0, v + 4.0, v + 5.0, v + 6.0, 0.5],
                            )
                        })
                        .collect();
                    if batch == 1 {
                        samples.into_iter().next().unwrap()
                    } else {
                        // SPEC: a JSON array of samples is a batch, in order.
                        let mut out = b"[".to_vec();
                        out.extend(samples.join(&b","[..]));
                        out.push(b']');
                        out
                    }
                })
                .collect()
        })
        .collect()
}

fn steady_state_allocations(batch: usize) {
    let mut path = Path::new();
    let topics: Vec<String> = (0..DEVICES).map(topic).collect();
    let warm_rounds = WINDOW.div_ceil(batch) + 1;
    let measured_rounds = 8;
    let all = payloads(warm_rounds + measured_rounds, 1_732_400_000_000, batch);
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
        "{allocations} allocations in {messages} messages ({batch} samples each): topic match, decode and window must not allocate"
    );
}

#[test]
fn topic_decode_and_window_allocate_nothing_per_message() {
    steady_state_allocations(1);
}

#[test]
fn a_batch_payload_allocates_nothing_per_sample() {
    steady_state_allocations(4);
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
