//! An independent Sparkplug B codec for the tests: the protobuf wire format
//! read and written by hand from the specification's `sparkplug_b.proto`
//! field numbers, sharing nothing with lineguard's prost definitions.

/// A metric value as the wire carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(u64),
    Long(u64),
    Float(f32),
    Double(f64),
    Bool(bool),
    Str(String),
    /// `is_null`: a metric declared with no value.
    Null,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: Option<String>,
    pub alias: Option<u64>,
    pub timestamp: Option<u64>,
    pub datatype: Option<u64>,
    pub value: Val,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Payload {
    pub timestamp: Option<u64>,
    pub seq: Option<u64>,
    pub metrics: Vec<Metric>,
}

/// Sparkplug B data type numbers.
pub const INT64: u64 = 4;
pub const FLOAT: u64 = 9;
pub const DOUBLE: u64 = 10;
pub const BOOLEAN: u64 = 11;
pub const STRING: u64 = 12;

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.b[self.pos];
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
        }
        panic!("varint too long");
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        s
    }

    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }

    /// (field number, wire type)
    fn key(&mut self) -> (u64, u64) {
        let k = self.varint();
        (k >> 3, k & 7)
    }

    fn skip(&mut self, wire: u64) {
        match wire {
            0 => {
                self.varint();
            }
            1 => {
                self.bytes(8);
            }
            2 => {
                let n = self.varint() as usize;
                self.bytes(n);
            }
            5 => {
                self.bytes(4);
            }
            w => panic!("wire type {w}"),
        }
    }
}

pub fn decode(b: &[u8]) -> Payload {
    let mut r = Reader { b, pos: 0 };
    let mut p = Payload::default();
    while !r.done() {
        match r.key() {
            (1, 0) => p.timestamp = Some(r.varint()),
            (2, 2) => {
                let n = r.varint() as usize;
                p.metrics.push(decode_metric(r.bytes(n)));
            }
            (3, 0) => p.seq = Some(r.varint()),
            (_, w) => r.skip(w),
        }
    }
    p
}

fn decode_metric(b: &[u8]) -> Metric {
    let mut r = Reader { b, pos: 0 };
    let mut m = Metric { name: None, alias: None, timestamp: None, datatype: None, value: Val::None };
    while !r.done() {
        match r.key() {
            (1, 2) => {
                let n = r.varint() as usize;
                m.name = Some(String::from_utf8(r.bytes(n).to_vec()).expect("utf-8 name"));
            }
            (2, 0) => m.alias = Some(r.varint()),
            (3, 0) => m.timestamp = Some(r.varint()),
            (7, 0) => {
                if r.varint() != 0 {
                    m.value = Val::Null;
                }
            }
            (4, 0) => m.datatype = Some(r.varint()),
            (10, 0) => m.value = Val::Int(r.varint()),
            (11, 0) => m.value = Val::Long(r.varint()),
            (12, 5) => m.value = Val::Float(f32::from_le_bytes(r.bytes(4).try_into().unwrap())),
            (13, 1) => m.value = Val::Double(f64::from_le_bytes(r.bytes(8).try_into().unwrap())),
            (14, 0) => m.value = Val::Bool(r.varint() != 0),
            (15, 2) => {
                let n = r.varint() as usize;
                m.value = Val::Str(String::from_utf8(r.bytes(n).to_vec()).expect("utf-8 string"));
            }
            (_, w) => r.skip(w),
        }
    }
    m
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

fn put_len(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub fn encode(p: &Payload) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(t) = p.timestamp {
        put_key(&mut out, 1, 0);
        put_varint(&mut out, t);
    }
    for m in &p.metrics {
        let mut b = Vec::new();
        if let Some(n) = &m.name {
            put_len(&mut b, 1, n.as_bytes());
        }
        for (field, v) in [(2, m.alias), (3, m.timestamp), (4, m.datatype)] {
            if let Some(v) = v {
                put_key(&mut b, field, 0);
                put_varint(&mut b, v);
            }
        }
        match &m.value {
            Val::Int(v) => {
                put_key(&mut b, 10, 0);
                put_varint(&mut b, *v);
            }
            Val::Long(v) => {
                put_key(&mut b, 11, 0);
                put_varint(&mut b, *v);
            }
            Val::Float(v) => {
                put_key(&mut b, 12, 5);
                b.extend_from_slice(&v.to_le_bytes());
            }
            Val::Double(v) => {
                put_key(&mut b, 13, 1);
                b.extend_from_slice(&v.to_le_bytes());
            }
            Val::Bool(v) => {
                put_key(&mut b, 14, 0);
                put_varint(&mut b, u64::from(*v));
            }
            Val::Str(s) => put_len(&mut b, 15, s.as_bytes()),
            Val::Null => {
                put_key(&mut b, 7, 0);
                put_varint(&mut b, 1);
            }
            Val::None => {}
        }
        put_len(&mut out, 2, &b);
    }
    if let Some(s) = p.seq {
        put_key(&mut out, 3, 0);
        put_varint(&mut out, s);
    }
    out
}

/// The NCMD a host application sends to ask for a rebirth.
pub fn rebirth_request() -> Vec<u8> {
    encode(&Payload {
        timestamp: Some(1),
        seq: None,
        metrics: vec![Metric {
            name: Some("Node Control/Rebirth".into()),
            alias: None,
            timestamp: Some(1),
            datatype: Some(BOOLEAN),
            value: Val::Bool(true),
        }],
    })
}

impl Payload {
    pub fn metric(&self, name: &str) -> &Metric {
        self.metrics
            .iter()
            .find(|m| m.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no metric `{name}` in {self:?}"))
    }
}

/// The kind of a Sparkplug topic (`NBIRTH`, `DDATA`, ...) and its device, if any.
pub fn topic_kind(topic: &str) -> (&str, Option<&str>) {
    let levels: Vec<&str> = topic.split('/').collect();
    (levels.get(2).copied().unwrap_or(""), levels.get(4).copied())
}
