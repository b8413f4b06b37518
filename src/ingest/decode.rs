//! Telemetry JSON -> samples in the model's feature order.
//!
//! A payload is one sample or several, in the pipeline's [`Shape`]: for
//! lineguard's own format one object `{"ts": ..., "values": {...}}` or an
//! array of them; for Telegraf `{"fields": {...}, "timestamp": ...}` or
//! `{"metrics": [...]}`. Values are written straight into a reused buffer, one row of `features`
//! f64 per sample, in card order; names the model does not use are skipped
//! without being stored. A bad sample inside an array is rejected on its own
//! and the others are kept; a syntax error anywhere rejects the whole payload,
//! since nothing in a truncated or corrupt message can be trusted.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::ingest::format::{Batch, InputFormat, Shape, TsUnit};

/// The six scalar `visit_*` methods of a serde `Visitor` (bool, integers,
/// float, string, null), all answering `$body`, with `$me` for `self`: a
/// visitor that reads only objects or arrays refuses every scalar alike.
macro_rules! refuse_scalars {
    ($me:ident => $body:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            #[allow(unused_variables)]
            let $me = self;
            $body
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            #[allow(unused_variables)]
            let $me = self;
            $body
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            #[allow(unused_variables)]
            let $me = self;
            $body
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            #[allow(unused_variables)]
            let $me = self;
            $body
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            #[allow(unused_variables)]
            let $me = self;
            $body
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            #[allow(unused_variables)]
            let $me = self;
            $body
        }
    };
}
use crate::ingest::reject::{Reason, Rejection};
pub(crate) use refuse_scalars;

/// Decoded samples of one payload; reused across payloads.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Per accepted sample: its `ts` in epoch ms, `None` when absent.
    pub ts: Vec<Option<i64>>,
    /// Row-major `[samples, features]`.
    pub values: Vec<f64>,
    /// Samples (or the whole payload) refused.
    pub rejects: Vec<Rejection>,
    /// For a format whose rows name their own device (Kepware): the rows'
    /// device keys, one after another, and where each ends. Empty otherwise:
    /// every row is the topic's device.
    pub keys: String,
    pub key_ends: Vec<usize>,
}

impl Decoded {
    pub(crate) fn clear(&mut self) {
        self.ts.clear();
        self.values.clear();
        self.rejects.clear();
        self.keys.clear();
        self.key_ends.clear();
    }

    /// Row `i`'s own device key, for a format whose rows name one.
    pub fn key(&self, i: usize) -> Option<&str> {
        let end = *self.key_ends.get(i)?;
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] };
        Some(&self.keys[start..end])
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
    shape: Shape,
    unit: TsUnit,
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
        let format = InputFormat::Lineguard;
        Self {
            features: features.to_vec(),
            index,
            max_samples,
            max_keys,
            max_depth,
            shape: format.shape(),
            unit: format.default_ts_unit(),
        }
    }

    /// Read payloads of `format`, numeric timestamps in `unit`.
    pub fn reading(mut self, format: InputFormat, unit: TsUnit) -> Self {
        self.shape = format.shape();
        self.unit = unit;
        self
    }

    /// How many features a row holds.
    pub fn feature_count(&self) -> usize {
        self.features.len()
    }

    /// `limits.max_samples_per_message`.
    pub fn max_samples(&self) -> usize {
        self.max_samples
    }

    /// The card position of feature `name`, if the model uses it.
    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
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
        sample_from_map(self.dec, self.out, map, true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.dec.shape.batch != Batch::TopLevelArray {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return self.not_a_sample();
        }
        samples_from_seq(self.dec, self.out, seq)
    }

    refuse_scalars!(me => me.not_a_sample());
}

impl PayloadSeed<'_> {
    fn not_a_sample<E>(self) -> Result<(), E> {
        self.out
            .rejects
            .push(Rejection::new(Reason::BadShape, format!("payload is not {}", self.dec.shape.expected)));
        Ok(())
    }
}

/// The samples of a batch array, each on its own: a bad one is rejected and
/// the others kept.
fn samples_from_seq<'de, A: SeqAccess<'de>>(
    dec: &Decoder,
    out: &mut Decoded,
    mut seq: A,
) -> Result<(), A::Error> {
    let mut n = 0usize;
    while n < dec.max_samples && seq.next_element_seed(SampleSeed { dec, out: &mut *out, n })?.is_some() {
        n += 1;
    }
    if n == dec.max_samples {
        let mut extra = 0usize;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            extra += 1;
        }
        if extra > 0 {
            out.rejects.push(Rejection::new(
                Reason::TooManySamples,
                format!("{extra} samples beyond the first {n} (limits.max_samples_per_message)"),
            ));
        }
    }
    if n == 0 {
        out.rejects.push(Rejection::new(Reason::EmptyBatch, "empty array: no samples"));
    }
    Ok(())
}

/// The array under a batch key (Telegraf's `metrics`).
struct BatchSeed<'a> {
    dec: &'a Decoder,
    out: &'a mut Decoded,
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = Checked<()>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = Checked<()>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of samples")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        samples_from_seq(self.dec, self.out, seq).map(Ok)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(self.not_an_array()))
    }
    refuse_scalars!(me => Ok(Err(me.not_an_array())));
}

impl BatchSeed<'_> {
    fn not_an_array(&self) -> Rejection {
        let key = match self.dec.shape.batch {
            Batch::Key(k) => k,
            Batch::TopLevelArray => "batch",
        };
        Rejection::new(Reason::BadShape, format!("`{key}` is not an array of samples"))
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
        sample_from_map(self.dec, self.out, map, false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.not_an_object()
    }
    refuse_scalars!(me => me.not_an_object());
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
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

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

/// Decode one sample object into a new row of `out`, or record why not. At
/// the top level (`outer`) the object may instead hold a batch under the
/// shape's batch key; its samples are decoded on their own.
fn sample_from_map<'de, A: MapAccess<'de>>(
    dec: &Decoder,
    out: &mut Decoded,
    mut map: A,
    outer: bool,
) -> Result<(), A::Error> {
    let shape = &dec.shape;
    let batch_key = match shape.batch {
        Batch::Key(k) if outer => Some(k),
        _ => None,
    };
    let nf = dec.feature_count();
    // The row is taken when the values come, so that a batch's samples,
    // written before, never land inside it.
    let mut row_start: Option<usize> = None;
    let mut ts: Option<i64> = None;
    let (mut seen_ts, mut seen_batch) = (false, false);
    let mut problem: Option<Rejection> = None;
    let twice = |key: &str| Rejection::new(Reason::DuplicateKey, format!("`{key}` appears twice"));
    let mixed =
        || Rejection::new(Reason::BadShape, format!("both `{}` and a batch of samples", shape.values_key));
    while let Some(Key(key)) = map.next_key::<Key>()? {
        let key = key.as_ref();
        if key == shape.ts_key {
            if seen_ts {
                map.next_value::<IgnoredAny>()?;
                problem.get_or_insert(twice(key));
                continue;
            }
            seen_ts = true;
            match map.next_value_seed(TsSeed { unit: dec.unit, key: shape.ts_key })? {
                Ok(t) => ts = t,
                Err(r) => {
                    problem.get_or_insert(r);
                }
            }
        } else if key == shape.values_key {
            if row_start.is_some() || seen_batch {
                map.next_value::<IgnoredAny>()?;
                problem.get_or_insert(if seen_batch { mixed() } else { twice(key) });
                continue;
            }
            let start = out.values.len();
            out.values.resize(start + nf, f64::NAN);
            row_start = Some(start);
            let row = &mut out.values[start..];
            if let Err(r) = map.next_value_seed(ValuesSeed { dec, row, key: shape.values_key })? {
                problem.get_or_insert(r);
            }
        } else if Some(key) == batch_key && !seen_batch && row_start.is_none() {
            seen_batch = true;
            if let Err(r) = map.next_value_seed(BatchSeed { dec, out: &mut *out })? {
                problem.get_or_insert(r);
            }
        } else if Some(key) == batch_key {
            map.next_value::<IgnoredAny>()?;
            problem.get_or_insert(if seen_batch { twice(key) } else { mixed() });
        } else {
            map.next_value::<IgnoredAny>()?;
        }
    }
    if seen_batch && row_start.is_none() {
        // A batch: its samples are in `out` already.
        out.rejects.extend(problem);
        return Ok(());
    }
    let start = match (row_start, &problem) {
        (Some(start), _) => start,
        (None, Some(_)) => out.values.len(),
        (None, None) => {
            out.rejects.push(Rejection::new(Reason::BadShape, format!("no `{}` object", shape.values_key)));
            return Ok(());
        }
    };
    if problem.is_none() {
        problem = missing_features(&dec.features, &out.values[start..]);
    }
    match problem {
        None => out.ts.push(ts),
        Some(r) => {
            out.values.truncate(start);
            out.rejects.push(r);
        }
    }
    Ok(())
}

/// A sample (`row`, one value per feature, NaN: absent) that lacks some of
/// `features`: the rejection naming them.
pub(crate) fn missing_features(features: &[String], row: &[f64]) -> Option<Rejection> {
    if !row.iter().any(|v| v.is_nan()) {
        return None;
    }
    let missing: Vec<&str> =
        features.iter().zip(row).filter(|(_, v)| v.is_nan()).map(|(f, _)| f.as_str()).collect();
    Some(Rejection::new(Reason::MissingFeature, format!("missing {}", missing.join(", "))))
}

/// A timestamp: a number in the pipeline's `ts_unit` (integer or
/// fractional), an RFC 3339 string (any number of fractional digits), or
/// null (= absent). Kept in whole epoch milliseconds.
pub(crate) struct TsSeed {
    unit: TsUnit,
    /// The payload's name for it, for messages.
    key: &'static str,
}

type Checked<T> = Result<T, Rejection>;

impl TsSeed {
    pub(crate) fn new(unit: TsUnit, key: &'static str) -> Self {
        Self { unit, key }
    }

    fn bad(&self, detail: impl fmt::Display) -> Rejection {
        Rejection::new(
            Reason::BadTimestamp,
            format!(
                "{} {detail}: use {} (ts_unit = \"{}\") or RFC 3339",
                self.key,
                self.unit.describe(),
                self.unit.as_str()
            ),
        )
    }

    fn in_range(&self, ms: Option<i64>, v: impl fmt::Display) -> Checked<Option<i64>> {
        ms.map(Some).ok_or_else(|| self.bad(format_args!("{v} is out of range")))
    }
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
        Ok(self.in_range(i64::try_from(v).ok().and_then(|v| self.unit.int_to_ms(v)), v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(if v >= 0 {
            self.in_range(self.unit.int_to_ms(v), v)
        } else {
            Err(self.bad(format_args!("{v} is before 1970")))
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(if v < 0.0 {
            Err(self.bad(format_args!("{v} is before 1970")))
        } else {
            self.in_range(self.unit.float_to_ms(v), v)
        })
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let parsed = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339);
        Ok(match parsed {
            Ok(t) if t.unix_timestamp() >= 0 => Ok(Some((t.unix_timestamp_nanos() / 1_000_000) as i64)),
            Ok(_) => Err(self.bad(format_args!("`{v}` is before 1970"))),
            Err(e) => Err(self.bad(format_args!("`{v}` ({e})"))),
        })
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(None))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Err(self.bad(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(self.bad("is an object")))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(self.bad("is an array")))
    }
}

/// The object of values: needed features into `row`, others skipped.
struct ValuesSeed<'a> {
    dec: &'a Decoder,
    row: &'a mut [f64],
    /// The payload's name for it, for messages.
    key: &'static str,
}

impl<'de> DeserializeSeed<'de> for ValuesSeed<'_> {
    type Value = Checked<()>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl ValuesSeed<'_> {
    fn not_object(&self) -> Rejection {
        Rejection::new(Reason::BadShape, format!("`{}` is not an object of feature name -> number", self.key))
    }
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
                    format!(
                        "more than {} keys in `{}` (limits.max_keys_per_sample)",
                        self.dec.max_keys, self.key
                    ),
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
        Ok(Err(self.not_object()))
    }
    refuse_scalars!(me => Ok(Err(me.not_object())));
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
                {"ts":1732400000123.0,"values":{"a":1,"b":2}},
                {"ts":1732400000123.7,"values":{"a":1,"b":2}},
                {"ts":"2024-11-23T22:13:20.1239999Z","values":{"a":1,"b":2}},
                {"ts":"2024-11-23T22:13:20Z","values":{"a":1,"b":2}}]"#,
        );
        let t = Some(1732400000123);
        assert_eq!(d.ts, [None, None, t, t, t, t, t, Some(1732400000000)], "{:?}", d.rejects);
        for bad in [r#""yesterday""#, "-5", "-0.5", "1e300", "true", "{}", "[1]", r#""2024-13-01T00:00:00Z""#]
        {
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
    fn timestamps_in_the_pipelines_unit() {
        let features = ["a".to_string(), "b".to_string()];
        for (unit, ts) in [
            (TsUnit::S, "1732400000.123"),
            (TsUnit::Ms, "1732400000123"),
            (TsUnit::Us, "1732400000123456"),
            (TsUnit::Ns, "1732400000123456789"),
        ] {
            let dec = Decoder::new(&features).reading(InputFormat::Lineguard, unit);
            let mut out = Decoded::default();
            dec.decode(format!(r#"{{"ts":{ts},"values":{{"a":1,"b":2}}}}"#).as_bytes(), &mut out);
            assert_eq!(out.ts, [Some(1732400000123)], "ts_unit {unit:?}: {:?}", out.rejects);
        }
        let dec = Decoder::new(&features).reading(InputFormat::Lineguard, TsUnit::S);
        let mut out = Decoded::default();
        dec.decode(br#"{"ts":-1,"values":{"a":1,"b":2}}"#, &mut out);
        assert!(
            out.rejects[0].detail.contains("epoch seconds (ts_unit = \"s\")"),
            "{}",
            out.rejects[0].detail
        );
    }

    fn telegraf() -> Decoder {
        let features: Vec<String> = ["field_1", "field_2", "field_N", "n_images"].map(String::from).to_vec();
        Decoder::new(&features).reading(InputFormat::Telegraf, InputFormat::Telegraf.default_ts_unit())
    }

    #[test]
    fn telegraf_examples_from_its_documentation() {
        let mut out = Decoded::default();
        telegraf().decode(include_bytes!("../../tests/fixtures/formats/telegraf-standard.json"), &mut out);
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        assert_eq!(out.ts, [Some(1_458_229_140_000)], "seconds by default");
        assert_eq!(out.values, [30.0, 4.0, 59.0, 660.0]);
        telegraf().decode(include_bytes!("../../tests/fixtures/formats/telegraf-batch.json"), &mut out);
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        assert_eq!(out.ts, [Some(1_458_229_140_000); 2]);
        assert_eq!(out.values, [30.0, 4.0, 59.0, 660.0, 30.0, 4.0, 59.0, 660.0]);
    }

    #[test]
    fn telegraf_bad_metrics_are_rejected_alone() {
        let mut out = Decoded::default();
        telegraf().decode(
            br#"{"metrics":[
                {"fields":{"field_1":1,"field_2":2,"field_N":3,"n_images":4,"status":"ok"},"timestamp":10},
                {"fields":{"field_1":1},"timestamp":11},
                {"fields":{"field_1":1,"field_2":2,"field_N":3,"n_images":4},"timestamp":"x"},
                {"fields":{"field_1":5,"field_2":6,"field_N":7,"n_images":8},"tags":{"host":"a"}}]}"#,
            &mut out,
        );
        assert_eq!(out.ts, [Some(10_000), None]);
        assert_eq!(out.values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(reasons(&out), [Reason::MissingFeature, Reason::BadTimestamp]);
        for (bad, reason) in [
            (r#"{"name":"docker","timestamp":1}"#, Reason::BadShape),
            (r#"{"metrics":{"fields":{}}}"#, Reason::BadShape),
            (r#"{"metrics":[]}"#, Reason::EmptyBatch),
            (r#"[{"fields":{"field_1":1,"field_2":2,"field_N":3,"n_images":4}}]"#, Reason::BadShape),
            (r#"{"ts":1,"values":{"field_1":1,"field_2":2,"field_N":3,"n_images":4}}"#, Reason::BadShape),
            (
                r#"{"fields":{"field_1":1,"field_2":2,"field_N":3,"n_images":4},"metrics":[{"fields":{}}]}"#,
                Reason::BadShape,
            ),
        ] {
            telegraf().decode(bad.as_bytes(), &mut out);
            assert_eq!(reasons(&out), [reason], "{bad}");
            assert!(out.is_empty(), "{bad}");
        }
        let d = telegraf();
        d.decode(br#"{"fields":{"field_1":1}}"#, &mut out);
        assert!(out.rejects[0].detail.contains("missing field_2, field_N, n_images"), "{:?}", out.rejects);
    }

    #[test]
    fn escaped_keys_still_match() {
        let d = decode(r#"{"values":{"\u0061":1,"b":2}}"#);
        assert_eq!(d.values, [1.0, 2.0]);
    }
}
