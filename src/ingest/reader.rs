//! One pipeline's way of reading its messages: the decoder of its
//! `input_format`, with that format's settings. (Sparkplug B, which keeps
//! per-device aliases, is read by [`sparkplug::input`](crate::sparkplug::input).)

use crate::ingest::decode::{Decoded, Decoder};
use crate::ingest::format::InputFormat;
use crate::ingest::input::Input;
use crate::ingest::{kepware, opcua, tag};

/// Reads the JSON formats of one pipeline into rows of its card's features.
#[derive(Debug, Clone)]
pub(crate) struct Reader {
    input: Input,
    decoder: Decoder,
}

impl Reader {
    pub(crate) fn new(input: &Input, decoder: Decoder) -> Self {
        Self { input: input.clone(), decoder: decoder.reading(input.format, input.ts_unit) }
    }

    /// How many features a row holds (the card's).
    pub(crate) fn feature_count(&self) -> usize {
        self.decoder.feature_count()
    }

    /// Decode the message on `topic` of device `device` (the topic's key)
    /// into `out`.
    pub(crate) fn read(&self, topic: &str, device: &str, payload: &[u8], out: &mut Decoded) {
        let (p, dec) = (&self.input, &self.decoder);
        match p.format {
            InputFormat::Tag => {
                // A tag the model does not use is skipped, as a name in `values` is.
                match p.topic.feature(topic).and_then(|f| dec.feature_index(f)) {
                    Some(f) => tag::decode(&p.tag_keys, p.ts_unit, f, dec.feature_count(), payload, out),
                    None => out.clear(),
                }
            }
            InputFormat::Kepware => kepware::decode(dec, &p.tag_id, p.ts_unit, device, payload, out),
            InputFormat::OpcuaJson => opcua::decode(dec, p.ts_unit, payload, out),
            InputFormat::Lineguard | InputFormat::Telegraf | InputFormat::Sparkplug => {
                dec.decode(payload, out)
            }
        }
    }

    /// An example message of this pipeline's format for features named as
    /// in `features`, values 1, 2, 3, ...: `(topic, payload)`. `None` for
    /// Sparkplug B (protobuf).
    pub(crate) fn example(&self, features: &[String]) -> Option<(String, String)> {
        let p = &self.input;
        let ts = 1_732_400_000_123i64;
        let values = || features.iter().enumerate().map(|(i, f)| (f.as_str(), i + 1));
        let object = |pairs: Vec<String>| format!("{{{}}}", pairs.join(","));
        let topic = p.topic.example(features.first().map_or("feature", String::as_str));
        let payload = match p.format {
            InputFormat::Sparkplug => return None,
            InputFormat::Lineguard => {
                let v = values().map(|(f, v)| format!("{f:?}:{v}")).collect();
                format!("{{\"ts\":{},\"values\":{}}}", p.ts_unit.render_ms(ts), object(v))
            }
            InputFormat::Telegraf => {
                let v = values().map(|(f, v)| format!("{f:?}:{v}")).collect();
                format!(
                    "{{\"fields\":{},\"name\":\"press\",\"tags\":{{}},\"timestamp\":{}}}",
                    object(v),
                    p.ts_unit.render_ms(ts)
                )
            }
            InputFormat::Tag => {
                let mut o = vec![
                    format!("{:?}:1", p.tag_keys.value),
                    format!("{:?}:{}", p.tag_keys.ts, p.ts_unit.render_ms(ts)),
                ];
                o.extend(p.tag_keys.quality.as_ref().map(|q| format!("{q:?}:true")));
                object(o)
            }
            InputFormat::Kepware => {
                let records: Vec<String> = values()
                    .map(|(f, v)| {
                        let id = p.tag_id.example(f);
                        format!("{{\"id\":{id:?},\"v\":{v},\"q\":true,\"t\":{}}}", p.ts_unit.render_ms(ts))
                    })
                    .collect();
                format!("{{\"timestamp\":{},\"values\":[{}]}}", p.ts_unit.render_ms(ts), records.join(","))
            }
            InputFormat::OpcuaJson => object(
                values()
                    .map(|(f, v)| {
                        format!(
                            "{f:?}:{{\"SourceTimestamp\":\"2024-11-23T22:13:20.1230000Z\",\"Value\":{v}}}"
                        )
                    })
                    .collect(),
            ),
        };
        Some((topic, payload))
    }
}
