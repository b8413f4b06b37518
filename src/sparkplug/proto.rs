//! The Sparkplug B payload, written from the Eclipse Sparkplug 3.0
//! specification (`sparkplug_b.proto`, proto2) as prost messages, so the
//! build needs no `protoc`.
//!
//! Only what lineguard reads or writes is modelled: the payload, its metrics
//! and their scalar values. Other fields (metadata, property sets, data sets,
//! templates) are skipped by the decoder like any unknown protobuf field.

/// `Payload`: every Sparkplug B message body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// Milliseconds since the Unix epoch, UTC.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// 0–255; absent in NDEATH.
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// `Payload.Metric`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Required in births; data messages may carry the alias alone.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// One of [`DataType`], as its number.
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<Value>,
}

/// `Payload.Metric.value` (the scalar members of the oneof).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    /// Int8, Int16, Int32 (two's complement in 32 bits), UInt8, UInt16, UInt32.
    #[prost(uint32, tag = "10")]
    Int(u32),
    /// Int64 (two's complement), UInt64, DateTime.
    #[prost(uint64, tag = "11")]
    Long(u64),
    #[prost(float, tag = "12")]
    Float(f32),
    #[prost(double, tag = "13")]
    Double(f64),
    #[prost(bool, tag = "14")]
    Boolean(bool),
    /// String, Text, UUID.
    #[prost(string, tag = "15")]
    String(String),
    #[prost(bytes = "vec", tag = "16")]
    Bytes(Vec<u8>),
}

/// Sparkplug B data types (the basic ones; the specification's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum DataType {
    Int8 = 1,
    Int16 = 2,
    Int32 = 3,
    Int64 = 4,
    UInt8 = 5,
    UInt16 = 6,
    UInt32 = 7,
    UInt64 = 8,
    Float = 9,
    Double = 10,
    Boolean = 11,
    String = 12,
    DateTime = 13,
    Text = 14,
}

impl DataType {
    pub fn from_u32(v: u32) -> Option<DataType> {
        use DataType::*;
        Some(match v {
            1 => Int8,
            2 => Int16,
            3 => Int32,
            4 => Int64,
            5 => UInt8,
            6 => UInt16,
            7 => UInt32,
            8 => UInt64,
            9 => Float,
            10 => Double,
            11 => Boolean,
            12 => String,
            13 => DateTime,
            14 => Text,
            _ => return None,
        })
    }
}

/// A metric as it lies in a payload: borrowed, nothing decoded that the
/// input does not read. What [`read_payload`] hands out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MetricRef<'a> {
    pub name: Option<&'a str>,
    pub alias: Option<u64>,
    pub timestamp: Option<u64>,
    pub datatype: Option<u32>,
    pub is_null: Option<bool>,
    pub value: Option<ValueRef<'a>>,
}

/// A metric's value, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Int(u32),
    Long(u64),
    Float(f32),
    Double(f64),
    Boolean(bool),
    String(&'a str),
    Bytes(&'a [u8]),
    /// A DataSet, Template or extension value: not a number.
    Other,
}

impl MetricRef<'_> {
    /// The metric's value as a number, read by its declared type (signed
    /// integers are two's complement in the wire's unsigned fields).
    /// `None` for strings, bytes, nulls and values of no known type.
    pub fn number(&self, datatype: Option<DataType>) -> Option<f64> {
        if self.is_null == Some(true) {
            return None;
        }
        Some(match (self.value?, datatype) {
            (ValueRef::Int(v), Some(DataType::Int8)) => v as u8 as i8 as f64,
            (ValueRef::Int(v), Some(DataType::Int16)) => v as u16 as i16 as f64,
            (ValueRef::Int(v), Some(DataType::Int32)) => v as i32 as f64,
            (ValueRef::Int(v), _) => v as f64,
            (ValueRef::Long(v), Some(DataType::Int64)) => v as i64 as f64,
            (ValueRef::Long(v), _) => v as f64,
            (ValueRef::Float(v), _) => v as f64,
            (ValueRef::Double(v), _) => v,
            (ValueRef::Boolean(b), _) => f64::from(u8::from(b)),
            _ => return None,
        })
    }
}

/// Why a payload is not Sparkplug B protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError(&'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A protobuf reader over borrowed bytes (the wire format, nothing else).
struct Wire<'a> {
    buf: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(WireError("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(WireError("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError("field runs past the end of the payload"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field's number and value; `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| WireError("length too large"))?;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"))),
            _ => return Err(WireError("unsupported wire type")),
        };
        match key >> 3 {
            0 => Err(WireError("field number 0")),
            n => Ok(Some((n, value))),
        }
    }
}

fn text(b: &[u8]) -> Result<&str, WireError> {
    std::str::from_utf8(b).map_err(|_| WireError("a string is not UTF-8"))
}

fn metric(buf: &[u8]) -> Result<MetricRef<'_>, WireError> {
    let mut m = MetricRef::default();
    let mut w = Wire { buf };
    while let Some((n, f)) = w.field()? {
        match (n, f) {
            (1, Field::Bytes(b)) => m.name = Some(text(b)?),
            (2, Field::Varint(v)) => m.alias = Some(v),
            (3, Field::Varint(v)) => m.timestamp = Some(v),
            (4, Field::Varint(v)) => m.datatype = Some(v as u32),
            (7, Field::Varint(v)) => m.is_null = Some(v != 0),
            (10, Field::Varint(v)) => m.value = Some(ValueRef::Int(v as u32)),
            (11, Field::Varint(v)) => m.value = Some(ValueRef::Long(v)),
            (12, Field::Fixed32(v)) => m.value = Some(ValueRef::Float(f32::from_bits(v))),
            (13, Field::Fixed64(v)) => m.value = Some(ValueRef::Double(f64::from_bits(v))),
            (14, Field::Varint(v)) => m.value = Some(ValueRef::Boolean(v != 0)),
            (15, Field::Bytes(b)) => m.value = Some(ValueRef::String(text(b)?)),
            (16, Field::Bytes(b)) => m.value = Some(ValueRef::Bytes(b)),
            (17..=19, _) => m.value = Some(ValueRef::Other),
            (1..=4 | 7 | 10..=16, _) => return Err(WireError("a metric field has the wrong wire type")),
            _ => {} // is_historical, is_transient, metadata, properties, unknown fields
        }
    }
    Ok(m)
}

/// Read a Sparkplug B payload without allocating: its timestamp, and each
/// metric in order through `each`. The whole payload is checked before the
/// first metric is handed out, so a malformed one yields no metric at all.
pub fn read_payload<'a>(
    payload: &'a [u8],
    mut each: impl FnMut(Option<u64>, MetricRef<'a>),
) -> Result<Option<u64>, WireError> {
    let mut timestamp = None;
    let mut w = Wire { buf: payload };
    while let Some((n, f)) = w.field()? {
        match (n, f) {
            (1, Field::Varint(v)) => timestamp = Some(v),
            (2, Field::Bytes(b)) => {
                metric(b)?;
            }
            (3, Field::Varint(_)) => {} // seq: the sender's, not read here
            (1..=3, _) => return Err(WireError("a payload field has the wrong wire type")),
            _ => {}
        }
    }
    let mut w = Wire { buf: payload };
    while let Some((n, f)) = w.field()? {
        if let (2, Field::Bytes(b)) = (n, f) {
            each(timestamp, metric(b)?);
        }
    }
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The borrowed reader sees what prost decodes, for every value kind.
    #[test]
    fn the_borrowed_reader_agrees_with_prost() {
        let metrics = vec![
            Metric {
                name: Some("a".into()),
                alias: Some(1),
                timestamp: Some(9),
                datatype: Some(3),
                value: Some(Value::Int((-4i32) as u32)),
                ..Default::default()
            },
            Metric { alias: Some(2), value: Some(Value::Long(u64::MAX)), ..Default::default() },
            Metric { name: Some("f".into()), value: Some(Value::Float(1.5)), ..Default::default() },
            Metric { name: Some("d".into()), value: Some(Value::Double(-2.25)), ..Default::default() },
            Metric { name: Some("b".into()), value: Some(Value::Boolean(true)), ..Default::default() },
            Metric { name: Some("s".into()), value: Some(Value::String("x".into())), ..Default::default() },
            Metric { name: Some("y".into()), value: Some(Value::Bytes(vec![1, 2])), ..Default::default() },
            Metric {
                name: Some("n".into()),
                is_null: Some(true),
                is_historical: Some(true),
                ..Default::default()
            },
        ];
        let p = Payload {
            timestamp: Some(77),
            metrics: metrics.clone(),
            seq: Some(3),
            uuid: Some("u".into()),
            ..Default::default()
        };
        let bytes = p.encode_to_vec();
        let mut seen = Vec::new();
        let ts = read_payload(&bytes, |t, m| seen.push((t, m))).unwrap();
        assert_eq!(ts, Some(77));
        assert_eq!(seen.len(), metrics.len());
        for ((t, r), m) in seen.iter().zip(&metrics) {
            assert_eq!(*t, Some(77));
            assert_eq!(r.name, m.name.as_deref());
            assert_eq!(
                (r.alias, r.timestamp, r.datatype, r.is_null),
                (m.alias, m.timestamp, m.datatype, m.is_null)
            );
        }
        let numbers: Vec<Option<f64>> =
            seen.iter().map(|(_, r)| r.number(r.datatype.and_then(DataType::from_u32))).collect();
        assert_eq!(
            numbers,
            [Some(-4.0), Some(u64::MAX as f64), Some(1.5), Some(-2.25), Some(1.0), None, None, None]
        );
        assert_eq!(seen[5].1.value, Some(ValueRef::String("x")));
        assert_eq!(seen[6].1.value, Some(ValueRef::Bytes(&[1, 2])));
        // Truncated, garbage, a wrong wire type, JSON: refused, no metric handed out.
        for bad in
            [&bytes[..bytes.len() - 1], b"\xff\xff\xff".as_slice(), b"{\"json\": 1}", &[0x12, 0x05, 0x08]]
        {
            let mut n = 0;
            assert!(read_payload(bad, |_, _| n += 1).is_err(), "{bad:?}");
            assert_eq!(n, 0);
        }
        assert_eq!(read_payload(&[], |_, _| {}), Ok(None), "an empty payload is a valid, empty message");
    }

    #[test]
    fn round_trips_and_reads_signed_integers() {
        let p = Payload {
            timestamp: Some(1),
            seq: Some(7),
            metrics: vec![Metric {
                name: Some("t".into()),
                alias: Some(3),
                datatype: Some(DataType::Int16 as u32),
                value: Some(Value::Int((-5i16) as u16 as u32)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = p.encode_to_vec();
        let back = Payload::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, p);
        let mut read = Vec::new();
        read_payload(&bytes, |_, m| read.push(m.number(Some(DataType::Int16)))).unwrap();
        assert_eq!(read, [Some(-5.0)]);
        let long = MetricRef { value: Some(ValueRef::Long((-9i64) as u64)), ..Default::default() };
        assert_eq!(long.number(Some(DataType::Int64)), Some(-9.0));
        let s = MetricRef { value: Some(ValueRef::String("x")), ..Default::default() };
        assert_eq!(s.number(Some(DataType::String)), None);
    }
}
