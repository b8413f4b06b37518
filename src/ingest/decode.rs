//! Telemetry JSON -> samples in the model's feature order.
//!
//! A payload is one object `{"ts": ..., "values": {...}}` or an array of them.
//! Values are written straight into a reused buffer, one row of `features`
//! f64 per sample, in card order; names the model does not use are skipped
//! without being stored. A bad sample inside an array is rejected on its own
//! and the others are kept; a syntax error anywhere rejects the whole payload,
//! since nothing in a truncated or corrupt message can be trusted.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::ingest::reject::{Reason, Rejection};

/// Decoded samples of one payload; reused across payloads.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Per accepted sample: its `ts` in epoch ms, `None` when absent.
    pub ts: Vec<Option<i64>>,
    /// Row-major `[samples, features]`.
    pub values: Vec<f64>,
    /// Samples (or the whole payload) refused.
    pub rejects: Vec<Rejection>,
}

impl Decoded {
    fn clear(&mut self) {
        self.ts.clear();
        self.values.clear();
        self.rejects.clear();
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
}

/// Decodes payloads for one feature list.
#[derive(Debug, Clone)]
pub struct Decoder {
    features: Vec<String>,
    index: HashMap<String, usize>,
    max_samples: usize,
    max_keys: usize,
    max_depth: usize,
}

/// Deepest `[`/`{` nesting in `payload`, stopping early past `limit`.
/// One pass over the bytes, outside strings; cheap next to the parse itself.
fn nesting_exceeds(payload: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in payload {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl Decoder {
    /// A decoder with generous default limits (1000 samples, 512 keys, depth 32).
    pub fn new(features: &[String]) -> Self {
        Self::with_limits(features, 1000, 512, 32)
    }

    pub fn with_limits(features: &[String], max_samples: usize, max_keys: usize, max_depth: usize) -> Self {
        let index = features.iter().enumerate().map(|(i, f)| (f.clone(), i)).collect();
        Self { features: features.to_vec(), index, max_samples, max_keys, max_depth }
    }

    pub fn features(&self) -> usize {
        self.features.len()
    }

    /// Decode `payload` into `out` (cleared first).
    pub fn decode(&self, payload: &[u8], out: &mut Decoded) {
        out.clear();
        if nesting_exceeds(payload, self.max_depth) {
            out.rejects.push(Rejection::new(
                Reason::TooDeep,
                format!("JSON nested deeper than {} levels (limits.max_json_depth)", self.max_depth),
            ));
            return;
        }
        let mut de = serde_json::Deserializer::from_slice(payload);
        let result = (PayloadSeed { dec: self, out: &mut *out }).deserialize(&mut de).and_then(|()| de.end());
        if let Err(e) = result {
            out.clear();
            let text = e.to_string();
            let reason = if text.contains("recursion limit") { Reason::TooDeep } else { Reason::InvalidJson };
            out.rejects.push(Rejection::new(reason, text));
        }
    }
}

struct PayloadSeed<'a> {
    dec: &'a Decoder,
    out: &'a mut Decoded,
}

impl<'de> DeserializeSeed<'de> for PayloadSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PayloadSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a telemetry object or an array of them")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        sample_from_map(self.dec, self.out, map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut n = 0usize;
        while n < self.dec.max_samples
            && seq.next_element_seed(SampleSeed { dec: self.dec, out: &mut *self.out, n })?.is_some()
        {
            n += 1;
        }
        if n == self.dec.max_samples {
            let mut extra = 0usize;
            while seq.next_element::<IgnoredAny>()?.is_some() {
                extra += 1;
            }
            if extra > 0 {
                self.out.rejects.push(Rejection::new(
                    Reason::TooManySamples,
                    format!("{extra} samples beyond the first {n} (limits.max_samples_per_message)"),
                ));
            }
        }
        if n == 0 {
            self.out.rejects.push(Rejection::new(Reason::EmptyBatch, "empty array: no samples"));
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_a_sample()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_a_sample()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_a_sample()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_a_sample()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_a_sample()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_a_sample()
    }
}

impl PayloadSeed<'_> {
    fn not_a_sample<E>(self) -> Result<(), E> {
        self.out.rejects.push(Rejection::new(
            Reason::BadShape,
            "payload is not a JSON object {\"ts\":..,\"values\":{..}} or an array of them",
        ));
        Ok(())
    }
}

/// One element of a batch array.
struct SampleSeed<'a> {
    dec: &'a Decoder,
    out: &'a mut Decoded,
    n: usize,
}

impl<'de> DeserializeSeed<'de> for SampleSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SampleSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a telemetry object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        sample_from_map(self.dec, self.out, map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.not_an_object()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_an_object()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_an_object()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_an_object()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_an_object()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_an_object()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_an_object()
    }
}

impl SampleSeed<'_> {
    fn not_an_object<E>(self) -> Result<(), E> {
        self.out
            .rejects
            .push(Rejection::new(Reason::BadShape, format!("batch element {} is not an object", self.n)));
        Ok(())
    }
}

/// A map key, borrowed from the payload when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Decode one `{"ts":..,"values":{..}}` into a new row of `out`, or record why not.
fn sample_from_map<'de, A: MapAccess<'de>>(
    dec: &Decoder,
    out: &mut Decoded,
    mut map: A,
) -> Result<(), A::Error> {
    let nf = dec.features();
    let row_start = out.values.len();
    out.values.resize(row_start + nf, f64::NAN);
    let mut ts: Option<i64> = None;
    let mut seen_ts = false;
    let mut seen_values = false;
    let mut problem: Option<Rejection> = None;
    while let Some(Key(key)) = map.next_key::<Key>()? {
        match key.as_ref() {
            "ts" if seen_ts => {
                map.next_value::<IgnoredAny>()?;
                problem.get_or_insert(Rejection::new(Reason::DuplicateKey, "`ts` appears twice"));
            }
            "ts" => {
                seen_ts = true;
                match map.next_value_seed(TsSeed)? {
                    Ok(t) => ts = t,
                    Err(r) => {
                        problem.get_or_insert(r);
                    }
                }
            }
            "values" if seen_values => {
                map.next_value::<IgnoredAny>()?;
                problem.get_or_insert(Rejection::new(Reason::DuplicateKey, "`values` appears twice"));
            }
            "values" => {
                seen_values = true;
                let row = &mut out.values[row_start..];
                if let Err(r) = map.next_value_seed(ValuesSeed { dec, row })? {
                    problem.get_or_insert(r);
                }
            }
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    if problem.is_none() && !seen_values {
        problem = Some(Rejection::new(Reason::BadShape, "no `values` object"));
    }
    if problem.is_none() {
        let row = &out.values[row_start..];
        if row.iter().any(|v| v.is_nan()) {
            let missing: Vec<&str> =
                dec.features.iter().zip(row).filter(|(_, v)| v.is_nan()).map(|(f, _)| f.as_str()).collect();
            problem = Some(Rejection::new(Reason::MissingFeature, format!("missing {}", missing.join(", "))));
        }
    }
    match problem {
        None => out.ts.push(ts),
        Some(r) => {
            out.values.truncate(row_start);
            out.rejects.push(r);
        }
    }
    Ok(())
}

/// `ts`: epoch milliseconds (integer, or a float with no fraction), an RFC 3339
/// string, or null (= absent).
struct TsSeed;

type Checked<T> = Result<T, Rejection>;

fn bad_ts(detail: impl fmt::Display) -> Rejection {
    Rejection::new(Reason::BadTimestamp, format!("ts {detail}: use epoch milliseconds or RFC 3339"))
}

impl<'de> DeserializeSeed<'de> for TsSeed {
    type Value = Checked<Option<i64>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TsSeed {
    type Value = Checked<Option<i64>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a timestamp")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map(Some).map_err(|_| bad_ts(format_args!("{v} is out of range"))))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(if v >= 0 { Ok(Some(v)) } else { Err(bad_ts(format_args!("{v} is before 1970"))) })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // 2^53: every integer below it is exact in f64.
        Ok(if v.is_finite() && v.fract() == 0.0 && (0.0..9.0e15).contains(&v) {
            Ok(Some(v as i64))
        } else {
            Err(bad_ts(format_args!("{v} is not whole milliseconds")))
        })
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let parsed = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339);
        Ok(match parsed {
            Ok(t) if t.unix_timestamp() >= 0 => Ok(Some((t.unix_timestamp_nanos() / 1_000_000) as i64)),
            Ok(_) => Err(bad_ts(format_args!("`{v}` is before 1970"))),
            Err(e) => Err(bad_ts(format_args!("`{v}` ({e})"))),
        })
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(None))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Err(bad_ts(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(bad_ts("is an object")))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(bad_ts("is an array")))
    }
}

/// The `values` object: needed features into `row`, others skipped.
struct ValuesSeed<'a> {
    dec: &'a Decoder,
    row: &'a mut [f64],
}

impl<'de> DeserializeSeed<'de> for ValuesSeed<'_> {
    type Value = Checked<()>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn values_not_object() -> Rejection {
    Rejection::new(Reason::BadShape, "`values` is not an object of feature name -> number")
}

impl<'de> Visitor<'de> for ValuesSeed<'_> {
    type Value = Checked<()>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of feature values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut problem = None;
        let mut keys = 0usize;
        while let Some(Key(key)) = map.next_key::<Key>()? {
            keys += 1;
            if keys > self.dec.max_keys && problem.is_none() {
                problem = Some(Rejection::new(
                    Reason::TooManyKeys,
                    format!("more than {} keys in `values` (limits.max_keys_per_sample)", self.dec.max_keys),
                ));
            }
            let Some(&ix) = self.dec.index.get(key.as_ref()) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let value = map.next_value_seed(NumberSeed)?;
            if problem.is_some() {
                continue;
            }
            if !self.row[ix].is_nan() {
                problem = Some(Rejection::new(Reason::DuplicateKey, format!("`{key}` appears twice")));
                continue;
            }
            match value {
                Number::Finite(v) => self.row[ix] = v,
                Number::NonFinite => {
                    problem = Some(Rejection::new(Reason::NonFinite, format!("`{key}` is not finite")))
                }
                Number::Other(kind) => {
                    problem =
                        Some(Rejection::new(Reason::NonNumeric, format!("`{key}` is {kind}, not a number")))
                }
            }
        }
        Ok(problem.map_or(Ok(()), Err))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(values_not_object()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(values_not_object()))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(values_not_object()))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(values_not_object()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(values_not_object()))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(values_not_object()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(values_not_object()))
    }
}

enum Number {
    Finite(f64),
    NonFinite,
    Other(&'static str),
}

struct NumberSeed;

impl<'de> DeserializeSeed<'de> for NumberSeed {
    type Value = Number;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Number, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NumberSeed {
    type Value = Number;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
        Ok(if v.is_finite() { Number::Finite(v) } else { Number::NonFinite })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
        Ok(Number::Finite(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
        Ok(Number::Finite(v as f64))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Number, E> {
        // "NaN" / "inf" strings are how some gateways spell a failed sensor.
        Ok(match v.trim().parse::<f64>() {
            Ok(x) if !x.is_finite() => Number::NonFinite,
            _ => Number::Other("a string"),
        })
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Number, E> {
        Ok(Number::Other("a boolean"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Number, E> {
        Ok(Number::Other("null"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Number, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Number::Other("an object"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Number, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Number::Other("an array"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        Decoder::new(&["a".to_string(), "b".to_string()])
    }

    fn decode(payload: &str) -> Decoded {
        let mut out = Decoded::default();
        decoder().decode(payload.as_bytes(), &mut out);
        out
    }

    fn reasons(d: &Decoded) -> Vec<Reason> {
        d.rejects.iter().map(|r| r.reason).collect()
    }

    #[test]
    fn object_in_card_order_extra_names_ignored() {
        let d = decode(r#"{"ts": 1732400000123, "values": {"b": 2, "x": "junk", "a": 1.5}, "unit": "x"}"#);
        assert_eq!(d.ts, [Some(1732400000123)]);
        assert_eq!(d.values, [1.5, 2.0]);
        assert!(d.rejects.is_empty());
    }

    #[test]
    fn timestamps() {
        let d = decode(
            r#"[{"values":{"a":1,"b":2}}, {"ts":null,"values":{"a":1,"b":2}},
                {"ts":"2024-11-23T22:13:20.123Z","values":{"a":1,"b":2}},
                {"ts":"2024-11-23T23:13:20.123+01:00","values":{"a":1,"b":2}},
                {"ts":1732400000123.0,"values":{"a":1,"b":2}}]"#,
        );
        assert_eq!(d.ts, [None, None, Some(1732400000123), Some(1732400000123), Some(1732400000123)]);
        for bad in [r#""yesterday""#, "-5", "1.5", "true", "{}", "[1]", r#""2024-13-01T00:00:00Z""#] {
            let d = decode(&format!(r#"{{"ts":{bad},"values":{{"a":1,"b":2}}}}"#));
            assert_eq!(reasons(&d), [Reason::BadTimestamp], "ts = {bad}");
            assert!(d.values.is_empty());
        }
    }

    #[test]
    fn bad_samples_in_a_batch_do_not_lose_good_ones() {
        let d = decode(
            r#"[{"ts":1,"values":{"a":1,"b":2}},
                {"ts":2,"values":{"a":1}},
                {"ts":3,"values":{"a":"1","b":2}},
                {"ts":4,"values":{"a":"NaN","b":2}},
                {"ts":5,"values":{"a":null,"b":2}},
                5, [1,2], {"ts":6},
                {"ts":7,"values":[1,2]},
                {"ts":8,"values":{"a":1,"a":3,"b":2}},
                {"ts":9,"values":{"a":3,"b":4}}]"#,
        );
        assert_eq!(d.ts, [Some(1), Some(9)]);
        assert_eq!(d.values, [1.0, 2.0, 3.0, 4.0]);
        use Reason::*;
        assert_eq!(
            reasons(&d),
            [
                MissingFeature,
                NonNumeric,
                NonFinite,
                NonNumeric,
                BadShape,
                BadShape,
                BadShape,
                BadShape,
                DuplicateKey
            ]
        );
        assert!(d.rejects[0].detail.contains("missing b"));
    }

    #[test]
    fn broken_payloads_reject_everything() {
        for bad in [
            "",
            "{",
            r#"[{"ts":1,"values":{"a":1,"b":2}}"#,
            r#"{"ts":1,"values":{"a":1,"b":2}} trailing"#,
            r#"{"ts":1,"values":{"a":1e999,"b":2}}"#,
            "\u{0}",
        ] {
            let d = decode(bad);
            assert_eq!(reasons(&d), [Reason::InvalidJson], "payload {bad:?}");
            assert!(d.is_empty());
        }
        let mut out = Decoded::default();
        decoder().decode(&[0xff, 0xfe, b'{'], &mut out);
        assert_eq!(reasons(&out), [Reason::InvalidJson]);
        assert_eq!(reasons(&decode("[]")), [Reason::EmptyBatch]);
        assert_eq!(reasons(&decode("42")), [Reason::BadShape]);
        assert_eq!(reasons(&decode(r#""x""#)), [Reason::BadShape]);
    }

    #[test]
    fn limits() {
        let dec = Decoder::with_limits(&["a".to_string()], 2, 3, 8);
        let mut out = Decoded::default();
        dec.decode(br#"[{"ts":1,"values":{"a":1}},{"ts":2,"values":{"a":2}},{"ts":3,"values":{"a":3}},{"x":[[[]]]}]"#, &mut out);
        assert_eq!(out.ts, [Some(1), Some(2)], "the first samples are kept");
        assert_eq!(reasons(&out), [Reason::TooManySamples]);
        dec.decode(br#"{"values":{"a":1,"b":2,"c":3,"d":4}}"#, &mut out);
        assert_eq!(reasons(&out), [Reason::TooManyKeys]);
        let deep = format!("{{\"values\":{{\"a\":1,\"x\":{}{}}}}}", "[".repeat(7), "]".repeat(7));
        dec.decode(deep.as_bytes(), &mut out);
        assert_eq!(reasons(&out), [Reason::TooDeep]);
        let brackets_in_strings = format!("{{\"values\":{{\"a\":1,\"x\":\"{}\\\"\"}}}}", "[".repeat(50));
        dec.decode(brackets_in_strings.as_bytes(), &mut out);
        assert_eq!(out.ts, [None], "brackets inside strings do not count: {:?}", out.rejects);
        let deep = "[".repeat(100_000);
        dec.decode(deep.as_bytes(), &mut out);
        assert_eq!(reasons(&out), [Reason::TooDeep], "no stack overflow");
    }

    #[test]
    fn escaped_keys_still_match() {
        let d = decode(r#"{"values":{"\u0061":1,"b":2}}"#);
        assert_eq!(d.values, [1.0, 2.0]);
    }
}
