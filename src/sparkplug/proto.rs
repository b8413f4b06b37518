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

impl Metric {
    /// The metric's value as a number, read by its declared type (signed
    /// integers are two's complement in the wire's unsigned fields).
    /// `None` for strings, bytes, nulls and values of no known type.
    pub fn number(&self, datatype: Option<DataType>) -> Option<f64> {
        if self.is_null == Some(true) {
            return None;
        }
        Some(match (&self.value, datatype) {
            (Some(Value::Int(v)), Some(DataType::Int8)) => *v as u8 as i8 as f64,
            (Some(Value::Int(v)), Some(DataType::Int16)) => *v as u16 as i16 as f64,
            (Some(Value::Int(v)), Some(DataType::Int32)) => *v as i32 as f64,
            (Some(Value::Int(v)), _) => *v as f64,
            (Some(Value::Long(v)), Some(DataType::Int64)) => *v as i64 as f64,
            (Some(Value::Long(v)), _) => *v as f64,
            (Some(Value::Float(v)), _) => *v as f64,
            (Some(Value::Double(v)), _) => *v,
            (Some(Value::Boolean(b)), _) => f64::from(u8::from(*b)),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

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
        let back = Payload::decode(p.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.metrics[0].number(Some(DataType::Int16)), Some(-5.0));
        let long = Metric { value: Some(Value::Long((-9i64) as u64)), ..Default::default() };
        assert_eq!(long.number(Some(DataType::Int64)), Some(-9.0));
        let s = Metric { value: Some(Value::String("x".into())), ..Default::default() };
        assert_eq!(s.number(Some(DataType::String)), None);
    }
}
