//! One value per message (`input_format = "tag"`): the Unified Namespace
//! style of HiveMQ Edge, Litmus Edge, Node-RED and Ignition's UNS
//! transmitter, where the topic names the feature
//! (`uns/{site}/{machine}/{feature}`).
//!
//! The payload is a bare number (`61.2`), the same as a JSON string
//! (`"61.2"`), or an object holding it: by default
//! `{"value": 61.2, "timestamp": 1732400000123}`, the keys configurable
//! (`tag_value`, `tag_ts`), and optionally a quality flag (`tag_quality`).
//! A value is written as a row of the model's features that holds only it
//! (the others NaN: absent), so the sampling clock takes it like any
//! other input.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::ingest::decode::{Decoded, Key, TsSeed};
use crate::ingest::format::TsUnit;
use crate::ingest::reject::{Reason, Rejection};

/// Where a tag payload keeps what (`tag_value`, `tag_ts`, `tag_quality`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagKeys {
    pub value: String,
    pub ts: String,
    pub quality: Option<String>,
}

impl Default for TagKeys {
    fn default() -> Self {
        Self { value: "value".into(), ts: "timestamp".into(), quality: None }
    }
}

/// Decode one tag payload for feature `feature` (of `features`) into a row of `out`.
pub fn decode(
    keys: &TagKeys,
    unit: TsUnit,
    feature: usize,
    features: usize,
    payload: &[u8],
    out: &mut Decoded,
) {
    out.clear();
    let mut de = serde_json::Deserializer::from_slice(payload);
    let seed = TagSeed { keys, unit };
    let result = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    let (ts, value) = match result {
        Ok(Ok(v)) => v,
        Ok(Err(r)) => return out.rejects.push(r),
        Err(e) => return out.rejects.push(Rejection::new(Reason::InvalidJson, e.to_string())),
    };
    let start = out.values.len();
    out.values.resize(start + features, f64::NAN);
    out.values[start + feature] = value;
    out.ts.push(ts);
}

type Checked<T> = Result<T, Rejection>;

struct TagSeed<'a> {
    keys: &'a TagKeys,
    unit: TsUnit,
}

impl<'de> DeserializeSeed<'de> for TagSeed<'_> {
    type Value = Checked<(Option<i64>, f64)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// A value: a JSON number, or a string holding one (`"61.2"`).
pub(crate) struct ValueSeed;

fn non_numeric(kind: &str) -> Rejection {
    Rejection::new(Reason::NonNumeric, format!("the value is {kind}, not a number"))
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Checked<f64>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Checked<f64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Ok(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Ok(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Ok(v as f64))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            Ok(_) => Err(Rejection::new(Reason::NonFinite, "the value is not finite")),
            Err(_) => Err(non_numeric("a string")),
        })
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(non_numeric("a boolean")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(non_numeric("null")))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(non_numeric("an array")))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(non_numeric("an object")))
    }
}

impl TagSeed<'_> {
    fn not_a_value(&self, kind: &str) -> Rejection {
        Rejection::new(
            Reason::BadShape,
            format!("payload is {kind}: send a number, or an object with `{}` (tag_value)", self.keys.value),
        )
    }
}

impl<'de> Visitor<'de> for TagSeed<'_> {
    type Value = Checked<(Option<i64>, f64)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or an object holding one")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(ValueSeed.visit_f64(v)?.map(|v| (None, v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(ValueSeed.visit_i64(v)?.map(|v| (None, v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ValueSeed.visit_u64(v)?.map(|v| (None, v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ValueSeed.visit_str(v)?.map(|v| (None, v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(ValueSeed.visit_bool(v)?.map(|v| (None, v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(ValueSeed.visit_unit()?.map(|v| (None, v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(self.not_a_value("an array")))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut value, mut ts, mut good) = (None, None, true);
        let mut problem: Option<Rejection> = None;
        while let Some(Key(key)) = map.next_key::<Key>()? {
            let key = key.as_ref();
            if key == self.keys.value {
                match map.next_value_seed(ValueSeed)? {
                    Ok(v) if value.is_none() => value = Some(v),
                    Ok(_) => {
                        problem.get_or_insert(Rejection::new(
                            Reason::DuplicateKey,
                            format!("`{key}` appears twice"),
                        ));
                    }
                    Err(r) => {
                        problem.get_or_insert(r);
                    }
                }
            } else if key == self.keys.ts {
                match map.next_value_seed(TsSeed::new(self.unit, "timestamp"))? {
                    Ok(t) => ts = t,
                    Err(r) => {
                        problem.get_or_insert(r);
                    }
                }
            } else if Some(key) == self.keys.quality.as_deref() {
                good = map.next_value_seed(QualitySeed)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if let Some(r) = problem {
            return Ok(Err(r));
        }
        if !good {
            let key = self.keys.quality.as_deref().unwrap_or("quality");
            return Ok(Err(Rejection::new(
                Reason::BadQuality,
                format!("`{key}` says the value is not good"),
            )));
        }
        Ok(match value {
            Some(v) => Ok((ts, v)),
            None => Err(Rejection::new(
                Reason::MissingFeature,
                format!("no `{}` in the object (tag_value)", self.keys.value),
            )),
        })
    }
}

/// A quality flag: `true`, `"good"` (any case), or a status code that means
/// good (0, OPC UA's Good; 192, OPC DA's). Anything else is not good.
pub(crate) struct QualitySeed;

impl<'de> DeserializeSeed<'de> for QualitySeed {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for QualitySeed {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a quality flag")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v.eq_ignore_ascii_case("good"))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        Ok(v == 0 || v == 192)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        Ok(v == 0 || v == 192)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        Ok(v == 0.0 || v == 192.0)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(keys: &TagKeys, payload: &str) -> Decoded {
        let mut out = Decoded::default();
        decode(keys, TsUnit::Ms, 1, 3, payload.as_bytes(), &mut out);
        out
    }

    fn value(d: &Decoded) -> (Option<i64>, f64) {
        assert!(d.rejects.is_empty(), "{:?}", d.rejects);
        assert_eq!(d.values.len(), 3);
        assert!(d.values[0].is_nan() && d.values[2].is_nan(), "only the topic's feature is set");
        (d.ts[0], d.values[1])
    }

    #[test]
    fn bare_numbers_strings_and_objects() {
        let k = TagKeys::default();
        assert_eq!(value(&one(&k, "61.2")), (None, 61.2));
        assert_eq!(value(&one(&k, " 7 ")), (None, 7.0));
        assert_eq!(value(&one(&k, r#""61.2""#)), (None, 61.2));
        // HiveMQ Edge / Litmus Edge style.
        assert_eq!(
            value(&one(&k, r#"{"value": 61.2, "timestamp": 1732400000123}"#)),
            (Some(1732400000123), 61.2)
        );
        assert_eq!(
            value(&one(&k, r#"{"timestamp": "2024-11-23T22:13:20.123Z", "value": "61.2", "unit": "C"}"#)),
            (Some(1732400000123), 61.2)
        );
        assert_eq!(value(&one(&k, r#"{"value": 3}"#)), (None, 3.0));
    }

    #[test]
    fn configured_keys_and_quality() {
        let k = TagKeys { value: "v".into(), ts: "t".into(), quality: Some("q".into()) };
        assert_eq!(value(&one(&k, r#"{"v": 1.5, "t": 1000, "q": true}"#)), (Some(1000), 1.5));
        assert_eq!(value(&one(&k, r#"{"v": 1.5, "q": "Good"}"#)), (None, 1.5));
        assert_eq!(value(&one(&k, r#"{"v": 1.5, "q": 192}"#)), (None, 1.5));
        for bad in
            [r#"{"v": 1.5, "q": false}"#, r#"{"v": 1.5, "q": "bad"}"#, r#"{"v": 1.5, "q": 2147483648}"#]
        {
            let d = one(&k, bad);
            assert_eq!(d.rejects.iter().map(|r| r.reason).collect::<Vec<_>>(), [Reason::BadQuality], "{bad}");
            assert!(d.is_empty());
        }
    }

    #[test]
    fn what_is_not_a_value_is_rejected() {
        let k = TagKeys::default();
        for (bad, reason) in [
            ("true", Reason::NonNumeric),
            ("null", Reason::NonNumeric),
            (r#""warm""#, Reason::NonNumeric),
            (r#""NaN""#, Reason::NonFinite),
            ("[1]", Reason::BadShape),
            (r#"{"val": 1}"#, Reason::MissingFeature),
            (r#"{"value": 1, "value": 2}"#, Reason::DuplicateKey),
            (r#"{"value": 1, "timestamp": "yesterday"}"#, Reason::BadTimestamp),
            ("61.2 trailing", Reason::InvalidJson),
            ("", Reason::InvalidJson),
        ] {
            let d = one(&k, bad);
            assert_eq!(d.rejects.iter().map(|r| r.reason).collect::<Vec<_>>(), [reason], "{bad}");
            assert!(d.is_empty(), "{bad}");
        }
    }
}
