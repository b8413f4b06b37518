//! Any card text: parsed into a self-consistent card or refused with an error.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lineguard::model::card::ModelCard;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(card) = ModelCard::parse(Path::new("fuzz.toml"), text) {
        assert!(card.window >= 1 && !card.features.is_empty() && !card.scores.is_empty());
        if let Some(n) = &card.normalize {
            assert_eq!(n.mean.len(), card.features.len());
            assert!(n.std.iter().all(|s| *s > 0.0 && s.is_finite()));
        }
        let scores = vec![0.5f32; card.scores.len()];
        let _ = card.state(&scores);
    }
});
