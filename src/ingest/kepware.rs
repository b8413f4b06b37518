//! KEPServerEX's IoT Gateway, standard template (`input_format = "kepware"`):
//!
//! ```json
//! {"timestamp": 1732400000123,
//!  "values": [{"id": "Channel1.Device1.Tag1", "v": 61.2, "q": true, "t": 1732400000100}]}
//! ```
//!
//! Each record is one value. A template (`tag_id`, default
//! `{channel}.{device}.{feature}`) says how `id` names the device and the
//! feature: the device key is the topic's placeholders, then the id's,
//! joined by `/`. A record with `q = false` is rejected (`bad_quality`) and
//! treated as absent; a record without `t` takes the message's `timestamp`.
//! A record whose id the template does not match, or whose feature the
//! model does not use, is skipped, as a name in `values` is.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::ingest::decode::{refuse_scalars, Decoded, Decoder, Key, TsSeed};
use crate::ingest::format::TsUnit;
use crate::ingest::reject::{Reason, Rejection};
use crate::ingest::tag::{QualitySeed, ValueSeed};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// Part of the device key.
    Placeholder,
    Feature,
}

/// A `tag_id` template such as `{channel}.{device}.{feature}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagId {
    raw: String,
    parts: Vec<Part>,
}

impl Default for TagId {
    fn default() -> Self {
        Self::parse("{channel}.{device}.{feature}").expect("a valid template")
    }
}

impl TagId {
    /// Parse a template of `.`-separated parts, each a literal or a
    /// `{name}`; exactly one is `{feature}`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for text in raw.split('.') {
            match text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(name)
                    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    if names.contains(&name) {
                        return Err(format!("`{{{name}}}` appears twice"));
                    }
                    names.push(name);
                    parts.push(if name == "feature" { Part::Feature } else { Part::Placeholder });
                }
                _ if text.contains(['{', '}']) => {
                    return Err(format!(
                        "`{text}`: a placeholder is a whole part between dots, like `{{device}}`"
                    ))
                }
                _ if text.is_empty() => return Err("an empty part (two dots in a row?)".into()),
                _ => parts.push(Part::Literal(text.to_string())),
            }
        }
        if !parts.contains(&Part::Feature) {
            return Err(
                "needs a `{feature}` part naming the model's feature, e.g. `{channel}.{device}.{feature}`"
                    .into(),
            );
        }
        Ok(Self { raw: raw.to_string(), parts })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// An id naming `feature`, each other placeholder filled with its name
    /// and a 1 (`channel1.device1.motor_temp`), for examples.
    pub fn example(&self, feature: &str) -> String {
        self.raw
            .split('.')
            .map(|t| match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some("feature") => feature.to_string(),
                Some(name) => format!("{name}1"),
                None => t.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The placeholders that name the device, in order.
    pub fn device_names(&self) -> Vec<String> {
        self.raw
            .split('.')
            .filter_map(|t| t.strip_prefix('{').and_then(|t| t.strip_suffix('}')))
            .filter(|n| *n != "feature")
            .map(str::to_string)
            .collect()
    }

    /// For an id that matches: its feature; its device parts are appended
    /// to `key` (whose part from `key_start` on is the device key so far),
    /// joined by `/`.
    fn split<'a>(&self, id: &'a str, key: &mut String, key_start: usize) -> Option<&'a str> {
        let mut feature = None;
        let start = key.len();
        let mut levels = id.split('.');
        for part in &self.parts {
            let Some(level) = levels.next().filter(|l| !l.is_empty()) else {
                key.truncate(start);
                return None;
            };
            match part {
                Part::Literal(s) if s == level => {}
                Part::Literal(_) => {
                    key.truncate(start);
                    return None;
                }
                Part::Feature => feature = Some(level),
                Part::Placeholder => {
                    if key.len() > key_start {
                        key.push('/');
                    }
                    key.push_str(level);
                }
            }
        }
        if levels.next().is_some() {
            key.truncate(start);
            return None;
        }
        feature
    }
}

/// Decode one IoT Gateway message from a topic whose device key is
/// `topic_key` (empty: the topic names no device) into `out`: a row per
/// value, with the row's device key in `out.keys`.
pub fn decode(dec: &Decoder, id: &TagId, unit: TsUnit, topic_key: &str, payload: &[u8], out: &mut Decoded) {
    out.clear();
    let mut de = serde_json::Deserializer::from_slice(payload);
    let seed = MessageSeed { r: Reading { dec, id, unit, topic_key }, out: &mut *out };
    if let Err(e) = seed.deserialize(&mut de).and_then(|()| de.end()) {
        out.clear();
        out.rejects.push(Rejection::new(Reason::InvalidJson, e.to_string()));
    }
}

/// What every level of a message is read with: the card's features, the
/// id template, the timestamp unit and the topic's device key.
#[derive(Clone, Copy)]
struct Reading<'a> {
    dec: &'a Decoder,
    id: &'a TagId,
    unit: TsUnit,
    topic_key: &'a str,
}

struct MessageSeed<'a> {
    r: Reading<'a>,
    out: &'a mut Decoded,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl MessageSeed<'_> {
    fn bad_shape(self) {
        self.out.rejects.push(Rejection::new(
            Reason::BadShape,
            "payload is not an IoT Gateway message {\"timestamp\":..,\"values\":[{\"id\",\"v\",\"q\",\"t\"},..]}",
        ));
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an IoT Gateway message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let first_row = self.out.ts.len();
        let (mut ts, mut seen_values) = (None, false);
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match key.as_ref() {
                "timestamp" => match map.next_value_seed(TsSeed::new(self.r.unit, "timestamp"))? {
                    Ok(t) => ts = t,
                    Err(r) => self.out.rejects.push(r),
                },
                "values" if !seen_values => {
                    seen_values = true;
                    let records = RecordsSeed { r: self.r, out: &mut *self.out };
                    map.next_value_seed(records)?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !seen_values {
            self.bad_shape();
            return Ok(());
        }
        // A record without `t` takes the message's time (which may come after it).
        for t in &mut self.out.ts[first_row..] {
            if t.is_none() {
                *t = ts;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.bad_shape();
        Ok(())
    }
    refuse_scalars!(me => { me.bad_shape(); Ok(()) });
}

/// The `values` array.
struct RecordsSeed<'a> {
    r: Reading<'a>,
    out: &'a mut Decoded,
}

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut n = 0usize;
        loop {
            if n == self.r.dec.max_samples() {
                let mut extra = 0usize;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    extra += 1;
                }
                if extra > 0 {
                    self.out.rejects.push(Rejection::new(
                        Reason::TooManySamples,
                        format!("{extra} records beyond the first {n} (limits.max_samples_per_message)"),
                    ));
                }
                return Ok(());
            }
            let record = RecordSeed { r: self.r, out: &mut *self.out, n };
            if seq.next_element_seed(record)?.is_none() {
                return Ok(());
            }
            n += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.out.rejects.push(Rejection::new(Reason::BadShape, "`values` is not an array of records"));
        Ok(())
    }
}

/// One `{"id", "v", "q", "t"}` record.
struct RecordSeed<'a> {
    r: Reading<'a>,
    out: &'a mut Decoded,
    n: usize,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        let key_start = out.keys.len();
        out.keys.push_str(self.r.topic_key);
        let mut feature: Option<usize> = None;
        let (mut matched, mut seen_id) = (false, false);
        let (mut value, mut ts, mut good) = (None, None, true);
        let mut problem: Option<Rejection> = None;
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match key.as_ref() {
                "id" if !seen_id => {
                    seen_id = true;
                    let id: Key = map.next_value()?;
                    if let Some(f) = self.r.id.split(&id.0, &mut out.keys, key_start) {
                        matched = true;
                        feature = self.r.dec.feature_index(f);
                    }
                }
                "v" => match map.next_value_seed(ValueSeed)? {
                    Ok(v) => value = Some(v),
                    Err(r) => {
                        problem.get_or_insert(r);
                    }
                },
                "q" => good = map.next_value_seed(QualitySeed)?,
                "t" => match map.next_value_seed(TsSeed::new(self.r.unit, "t"))? {
                    Ok(t) => ts = t,
                    Err(r) => {
                        problem.get_or_insert(r);
                    }
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some(f) = feature.filter(|_| matched) else {
            // Not a tag of this model (or no id): skipped.
            out.keys.truncate(key_start);
            if !seen_id {
                out.rejects.push(Rejection::new(Reason::BadShape, format!("record {} has no `id`", self.n)));
            }
            return Ok(());
        };
        let rejected = match (problem, good, value) {
            (Some(r), _, _) => Some(r),
            (None, false, _) => {
                Some(Rejection::new(Reason::BadQuality, format!("record {} has `q` false", self.n)))
            }
            (None, true, None) => {
                Some(Rejection::new(Reason::MissingFeature, format!("record {} has no `v`", self.n)))
            }
            (None, true, Some(_)) => None,
        };
        if let Some(r) = rejected {
            out.keys.truncate(key_start);
            out.rejects.push(r);
            return Ok(());
        }
        let nf = self.r.dec.feature_count();
        let start = out.values.len();
        out.values.resize(start + nf, f64::NAN);
        out.values[start + f] = value.expect("checked above");
        out.ts.push(ts);
        out.key_ends.push(out.keys.len());
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.out
            .rejects
            .push(Rejection::new(Reason::BadShape, format!("record {} is not an object", self.n)));
        Ok(())
    }
    refuse_scalars!(me => { me.out .rejects .push(Rejection::new(Reason::BadShape, format!("record {} is not an object", me.n))); Ok(()) });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        Decoder::new(&["Tag1".to_string(), "Tag2".to_string()])
    }

    fn rows(d: &Decoded) -> Vec<(String, Option<i64>, usize, f64)> {
        (0..d.len())
            .map(|i| {
                let row = &d.values[i * 2..i * 2 + 2];
                let f = row.iter().position(|v| !v.is_nan()).expect("one value per row");
                assert_eq!(row.iter().filter(|v| !v.is_nan()).count(), 1);
                (d.key(i).unwrap().to_string(), d.ts[i], f, row[f])
            })
            .collect()
    }

    #[test]
    fn the_standard_template() {
        let mut out = Decoded::default();
        let payload = include_bytes!("../../tests/fixtures/formats/kepware-standard.json");
        decode(&decoder(), &TagId::default(), TsUnit::Ms, "", payload, &mut out);
        assert_eq!(
            rows(&out),
            [
                ("Channel1/Device1".to_string(), Some(1459444521828), 0, 250.0),
                ("Channel1/Device1".to_string(), Some(1459444521828), 1, 33.5),
                ("Channel1/Device2".to_string(), Some(1459444522441), 1, 12.25),
            ],
            "a record without `t` takes the message's timestamp"
        );
        assert_eq!(out.rejects.iter().map(|r| r.reason).collect::<Vec<_>>(), [Reason::BadQuality]);
    }

    #[test]
    fn the_topic_and_the_template_make_the_device_key() {
        let mut out = Decoded::default();
        let id = TagId::parse("Site.{line}.{machine}.{feature}").unwrap();
        assert_eq!(id.device_names(), ["line", "machine"]);
        let payload = br#"{"values":[
            {"id":"Site.l1.press3.Tag2","v":"1.5","t":5},
            {"id":"Other.l1.press3.Tag2","v":1,"t":5},
            {"id":"Site.l1.press3.Unused","v":1,"t":5},
            {"id":"Site.l1.press3.Tag1.extra","v":1,"t":5},
            {"id":"Site.l1.press3.Tag1","v":"warm","t":6},
            {"v":1,"t":7}],"timestamp":9}"#;
        decode(&decoder(), &id, TsUnit::Ms, "gw1", payload, &mut out);
        assert_eq!(rows(&out), [("gw1/l1/press3".to_string(), Some(5), 1, 1.5)], "{:?}", out.rejects);
        assert_eq!(
            out.rejects.iter().map(|r| r.reason).collect::<Vec<_>>(),
            [Reason::NonNumeric, Reason::BadShape]
        );
        for bad in ["{channel}.{device}", "{a}.{a}.{feature}", "x..{feature}", "x{y}.{feature}"] {
            assert!(TagId::parse(bad).is_err(), "{bad}");
        }
        for (bad, reason) in [
            (r#"{"timestamp":1}"#, Reason::BadShape),
            (r#"[1]"#, Reason::BadShape),
            (r#"{"values":{}}"#, Reason::BadShape),
            (r#"{"values":[1]}"#, Reason::BadShape),
            ("{", Reason::InvalidJson),
        ] {
            decode(&decoder(), &TagId::default(), TsUnit::Ms, "", bad.as_bytes(), &mut out);
            assert_eq!(out.rejects.iter().map(|r| r.reason).collect::<Vec<_>>(), [reason], "{bad}");
            assert!(out.is_empty());
        }
    }
}
