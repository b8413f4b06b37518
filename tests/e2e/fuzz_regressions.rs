//! Inputs kept from fuzzing (`fuzz/run.sh`): seeds and anything a fuzzer
//! once found, replayed through the same checks as the fuzz targets.

use std::path::Path;

use lineguard::ingest::decode::{Decoded, Decoder};
use lineguard::ingest::topic::TopicTemplate;
use lineguard::model::card::ModelCard;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}

#[test]
fn decode_inputs() {
    let features: Vec<String> = ["a", "b", "spindle_speed"].iter().map(|s| s.to_string()).collect();
    let decoder = Decoder::with_limits(&features, 64, 32, 16);
    let mut accepted = 0;
    for (name, data) in inputs("decode") {
        let mut out = Decoded::default();
        decoder.decode(&data, &mut out);
        assert_eq!(out.values.len(), out.ts.len() * features.len(), "{name}");
        assert!(out.values.iter().all(|v| v.is_finite()), "{name}");
        assert!(out.ts.len() <= 64, "{name}");
        accepted += out.ts.len();
    }
    assert!(accepted > 0, "the seeds include valid samples");
}

#[test]
fn card_inputs() {
    let mut parsed = 0;
    for (name, data) in inputs("card") {
        let Ok(text) = std::str::from_utf8(&data) else { continue };
        if let Ok(card) = ModelCard::parse(Path::new(&name), text) {
            assert!(card.window >= 1 && !card.features.is_empty() && !card.scores.is_empty(), "{name}");
            if let Some(n) = &card.normalize {
                assert_eq!(n.mean.len(), card.features.len(), "{name}");
            }
            parsed += 1;
        }
    }
    assert!(parsed > 0, "the seeds include valid cards");
}

#[test]
fn topic_inputs() {
    let mut matched = 0;
    for (name, data) in inputs("topic") {
        let Ok(text) = std::str::from_utf8(&data) else { continue };
        let (template, topic) = text.split_once('\n').unwrap_or((text, text));
        let Ok(t) = TopicTemplate::parse_input(template) else { continue };
        if let Some(key) = t.device_key(topic) {
            assert_eq!(key.split('/').count(), t.placeholders().len(), "{name}");
            assert_eq!(t.render(&t, &key), topic, "{name}");
            matched += 1;
        }
    }
    assert!(matched > 0, "the seeds include matching topics");
}
