//! The OPC UA connector's JSON of Azure IoT Operations
//! (`input_format = "opcua-json"`): an object of data points, each an OPC UA
//! DataValue in its JSON encoding,
//!
//! ```json
//! {"temperature": {"SourceTimestamp": "2024-07-29T15:02:17.1858435Z", "Value": 4558}, ...}
//! ```
//!
//! Each data point the card lists is one value (a row holding only it),
//! stamped with its `SourceTimestamp` (else `ServerTimestamp`, else the
//! receive time). A `Status` that is not good (OPC UA leaves it out when it
//! is) is `bad_quality`: the value is treated as absent. Data points the
//! model does not use are skipped.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::ingest::decode::{refuse_scalars, Decoded, Decoder, Key, TsSeed};
use crate::ingest::format::TsUnit;
use crate::ingest::reject::{Reason, Rejection};
use crate::ingest::tag::{QualitySeed, ValueSeed};

/// Decode one connector message into `out`: a row per data point the model uses.
pub fn decode(dec: &Decoder, unit: TsUnit, payload: &[u8], out: &mut Decoded) {
    out.clear();
    let mut de = serde_json::Deserializer::from_slice(payload);
    if let Err(e) = (MessageSeed { dec, unit, out: &mut *out }).deserialize(&mut de).and_then(|()| de.end()) {
        out.clear();
        out.rejects.push(Rejection::new(Reason::InvalidJson, e.to_string()));
    }
}

struct MessageSeed<'a> {
    dec: &'a Decoder,
    unit: TsUnit,
    out: &'a mut Decoded,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

fn not_an_object() -> Rejection {
    Rejection::new(
        Reason::BadShape,
        "payload is not an object of data points {\"name\":{\"SourceTimestamp\",\"Value\"}}",
    )
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of data points")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = 0usize;
        while let Some(Key(name)) = map.next_key::<Key>()? {
            keys += 1;
            if keys > self.dec.max_samples() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let Some(feature) = self.dec.feature_index(&name) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let point = map.next_value_seed(PointSeed { unit: self.unit })?;
            match point {
                Ok((ts, v)) => {
                    let nf = self.dec.feature_count();
                    let start = self.out.values.len();
                    self.out.values.resize(start + nf, f64::NAN);
                    self.out.values[start + feature] = v;
                    self.out.ts.push(ts);
                }
                Err(mut r) => {
                    r.detail = format!("`{name}`: {}", r.detail);
                    self.out.rejects.push(r);
                }
            }
        }
        if keys > self.dec.max_samples() {
            self.out.rejects.push(Rejection::new(
                Reason::TooManySamples,
                format!(
                    "{} data points beyond the first {} (limits.max_samples_per_message)",
                    keys - self.dec.max_samples(),
                    self.dec.max_samples()
                ),
            ));
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.out.rejects.push(not_an_object());
        Ok(())
    }
    refuse_scalars!(me => { me.out.rejects.push(not_an_object()); Ok(()) });
}

/// One DataValue: `(ts, value)` or why not.
struct PointSeed {
    unit: TsUnit,
}

type Checked<T> = Result<T, Rejection>;

impl<'de> DeserializeSeed<'de> for PointSeed {
    type Value = Checked<(Option<i64>, f64)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn not_a_data_value() -> Rejection {
    Rejection::new(Reason::BadShape, "not a DataValue {\"SourceTimestamp\",\"Value\"}")
}

impl<'de> Visitor<'de> for PointSeed {
    type Value = Checked<(Option<i64>, f64)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a DataValue")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut value, mut source, mut server, mut good) = (None, None, None, true);
        let mut problem: Option<Rejection> = None;
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match key.as_ref() {
                "Value" => match map.next_value_seed(ValueSeed)? {
                    Ok(v) => value = Some(v),
                    Err(r) => {
                        problem.get_or_insert(r);
                    }
                },
                "SourceTimestamp" | "ServerTimestamp" => {
                    let slot = if key.as_ref() == "SourceTimestamp" { &mut source } else { &mut server };
                    match map.next_value_seed(TsSeed::new(self.unit, "SourceTimestamp"))? {
                        Ok(t) => *slot = t,
                        Err(r) => {
                            problem.get_or_insert(r);
                        }
                    }
                }
                "Status" | "StatusCode" => good = map.next_value_seed(QualitySeed)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match (problem, good, value) {
            (Some(r), _, _) => Err(r),
            (None, false, _) => Err(Rejection::new(Reason::BadQuality, "its Status is not good")),
            (None, true, None) => Err(Rejection::new(Reason::MissingFeature, "no `Value`")),
            (None, true, Some(v)) => Ok((source.or(server), v)),
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(not_a_data_value()))
    }
    refuse_scalars!(me => Ok(Err(not_a_data_value())));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        Decoder::new(&["temperature".to_string(), "Tag 10".to_string()])
    }

    #[test]
    fn the_connector_example() {
        let mut out = Decoded::default();
        decode(
            &decoder(),
            TsUnit::Ms,
            include_bytes!("../../tests/fixtures/formats/opcua-json-thermostat.json"),
            &mut out,
        );
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        // 2024-07-29T15:02:17.1858435Z, 7 fractional digits, in whole ms.
        assert_eq!(out.ts, [Some(1_722_265_337_185), Some(1_722_265_337_185)]);
        assert_eq!(out.values[0], 4558.0);
        assert!(out.values[1].is_nan() && out.values[2].is_nan());
        assert_eq!(out.values[3], 4558.0);
    }

    #[test]
    fn status_values_and_shapes() {
        let mut out = Decoded::default();
        decode(
            &decoder(),
            TsUnit::Ms,
            br#"{"temperature":{"Value":"21.5","ServerTimestamp":1000},
                 "Tag 10":{"Value":3,"Status":2150891520,"SourceTimestamp":"2024-07-29T15:02:17Z"},
                 "humidity":{"Value":40}}"#,
            &mut out,
        );
        assert_eq!(
            (out.ts.as_slice(), out.values[0]),
            (&[Some(1000)][..], 21.5),
            "ServerTimestamp as a fallback"
        );
        assert_eq!(out.rejects.iter().map(|r| r.reason).collect::<Vec<_>>(), [Reason::BadQuality]);
        assert!(out.rejects[0].detail.contains("`Tag 10`"), "{:?}", out.rejects);
        for (bad, reason) in [
            ("[1]", Reason::BadShape),
            (r#"{"temperature":4558}"#, Reason::BadShape),
            (r#"{"temperature":{"SourceTimestamp":"2024-07-29T15:02:17Z"}}"#, Reason::MissingFeature),
            (r#"{"temperature":{"Value":true}}"#, Reason::NonNumeric),
            (r#"{"temperature":{"Value":1,"SourceTimestamp":"yesterday"}}"#, Reason::BadTimestamp),
            ("{", Reason::InvalidJson),
        ] {
            decode(&decoder(), TsUnit::Ms, bad.as_bytes(), &mut out);
            assert_eq!(out.rejects.iter().map(|r| r.reason).collect::<Vec<_>>(), [reason], "{bad}");
            assert!(out.is_empty(), "{bad}");
        }
    }
}
