//! Any template and topic: parsing never panics; a match yields a device key
//! that renders back into the template's levels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lineguard::ingest::topic::TopicTemplate;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (template, topic) = text.split_once('\n').unwrap_or((text, text));
    let Ok(t) = TopicTemplate::parse_input(template) else { return };
    let filter = t.filter();
    assert_eq!(filter.split('/').count(), template.split('/').count());
    if let Some(key) = t.device_key(topic) {
        assert_eq!(key.split('/').count(), t.placeholders().len());
        // The input template rendered with the key is the topic itself.
        assert_eq!(t.render(&t, &key), topic);
    }
});
