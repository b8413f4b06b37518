//! Which payload shape a pipeline reads (`input_format`), and the unit of
//! its numeric timestamps (`ts_unit`).
//!
//! A whole-sample JSON format is a [`Shape`]: which key holds the
//! timestamp, which the object of values, and how several samples travel in
//! one message. The decoder reads every shape with the same allocation-free
//! visitor, so adding one of these formats is one more entry in
//! [`InputFormat::shape`]. Sparkplug B has its own decoder
//! ([`sparkplug::input`](crate::sparkplug::input)).

use serde::{Deserialize, Serialize};

/// `input_format` of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// `{"ts": .., "values": {..}}`, or an array of them (SPEC).
    #[default]
    Lineguard,
    /// Sparkplug B DDATA and DBIRTH on `spBv1.0/...` topics.
    Sparkplug,
    /// Telegraf's JSON serializer: `{"fields": {..}, "name": .., "tags": {..},
    /// "timestamp": ..}`, or its batch form `{"metrics": [..]}`.
    Telegraf,
    /// One value per message, the topic naming the feature ([`ingest::tag`](crate::ingest::tag)).
    Tag,
    /// KEPServerEX IoT Gateway, standard template ([`ingest::kepware`](crate::ingest::kepware)).
    Kepware,
    /// The OPC UA connector JSON of Azure IoT Operations ([`ingest::opcua`](crate::ingest::opcua)).
    #[serde(rename = "opcua-json")]
    OpcuaJson,
}

impl InputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Lineguard => "lineguard",
            InputFormat::Sparkplug => "sparkplug",
            InputFormat::Telegraf => "telegraf",
            InputFormat::Tag => "tag",
            InputFormat::Kepware => "kepware",
            InputFormat::OpcuaJson => "opcua-json",
        }
    }

    /// Whether a message carries single values rather than whole samples,
    /// so that only a sampling clock can form samples.
    pub fn per_value(self) -> bool {
        matches!(self, InputFormat::Tag | InputFormat::Kepware | InputFormat::OpcuaJson)
    }

    /// The unit of numeric timestamps when `ts_unit` is not set: what the
    /// format's producer writes by default (Telegraf's
    /// `json_timestamp_units = "1s"`).
    pub fn default_ts_unit(self) -> TsUnit {
        match self {
            InputFormat::Telegraf => TsUnit::S,
            InputFormat::Lineguard
            | InputFormat::Sparkplug
            | InputFormat::Tag
            | InputFormat::Kepware
            | InputFormat::OpcuaJson => TsUnit::Ms,
        }
    }

    /// The JSON shape of a whole-sample format (Sparkplug, protobuf, and
    /// tags have decoders of their own).
    pub fn shape(self) -> Shape {
        match self {
            InputFormat::Lineguard
            | InputFormat::Sparkplug
            | InputFormat::Tag
            | InputFormat::Kepware
            | InputFormat::OpcuaJson => Shape {
                ts_key: "ts",
                values_key: "values",
                batch: Batch::TopLevelArray,
                expected: "a JSON object {\"ts\":..,\"values\":{..}} or an array of them",
            },
            InputFormat::Telegraf => Shape {
                ts_key: "timestamp",
                values_key: "fields",
                batch: Batch::Key("metrics"),
                expected: "a Telegraf JSON metric {\"fields\":{..},\"timestamp\":..} or {\"metrics\":[..]}",
            },
        }
    }
}

/// Where a whole-sample JSON format keeps what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// The sample's timestamp (absent or null: the receive time).
    pub ts_key: &'static str,
    /// The object of feature name -> number.
    pub values_key: &'static str,
    pub batch: Batch,
    /// What a payload should look like, for a `bad_shape` rejection.
    pub expected: &'static str,
}

/// How one message carries several samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// The payload is an array of samples.
    TopLevelArray,
    /// The payload is an object whose key holds an array of samples.
    Key(&'static str),
}

/// The unit of a numeric timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TsUnit {
    S,
    Ms,
    Us,
    Ns,
}

/// Timestamps beyond this (in ms, about the year 287 000) are refused: every
/// integer below 2^53 is exact in f64, so nothing in range is rounded.
const MAX_MS: i64 = 9_000_000_000_000_000 / 1000 * 1000;

impl TsUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            TsUnit::S => "s",
            TsUnit::Ms => "ms",
            TsUnit::Us => "us",
            TsUnit::Ns => "ns",
        }
    }

    /// Words for a message: "epoch seconds".
    pub fn describe(self) -> &'static str {
        match self {
            TsUnit::S => "epoch seconds",
            TsUnit::Ms => "epoch milliseconds",
            TsUnit::Us => "epoch microseconds",
            TsUnit::Ns => "epoch nanoseconds",
        }
    }

    /// Epoch ms as a number in this unit (for examples).
    pub fn render_ms(self, ms: i64) -> String {
        match self {
            TsUnit::S => format!("{}.{:03}", ms / 1000, ms % 1000),
            TsUnit::Ms => ms.to_string(),
            TsUnit::Us => (ms * 1000).to_string(),
            TsUnit::Ns => (ms * 1_000_000).to_string(),
        }
    }

    /// An integer timestamp (>= 0) in epoch ms, finer units truncated to the
    /// millisecond; `None` when out of range.
    pub fn int_to_ms(self, v: i64) -> Option<i64> {
        let ms = match self {
            TsUnit::S => v.checked_mul(1000)?,
            TsUnit::Ms => v,
            TsUnit::Us => v / 1000,
            TsUnit::Ns => v / 1_000_000,
        };
        (0..MAX_MS).contains(&ms).then_some(ms)
    }

    /// A fractional timestamp (>= 0) in epoch ms, truncated to the
    /// millisecond. It is rounded to the microsecond first, so that a decimal
    /// such as 1732400000.123 s, which f64 holds as ...122.99999, is 123 ms.
    pub fn float_to_ms(self, v: f64) -> Option<i64> {
        let per_us = match self {
            TsUnit::S => 1e6,
            TsUnit::Ms => 1e3,
            TsUnit::Us => 1.0,
            TsUnit::Ns => 1e-3,
        };
        let us = (v * per_us).round();
        if !(us.is_finite() && us >= 0.0 && us < MAX_MS as f64 * 1000.0) {
            return None;
        }
        Some((us as i64) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_convert_to_whole_milliseconds() {
        assert_eq!(TsUnit::S.int_to_ms(1_732_400_000), Some(1_732_400_000_000));
        assert_eq!(TsUnit::Ms.int_to_ms(1_732_400_000_123), Some(1_732_400_000_123));
        assert_eq!(TsUnit::Us.int_to_ms(1_732_400_000_123_999), Some(1_732_400_000_123));
        assert_eq!(TsUnit::Ns.int_to_ms(1_732_400_000_123_999_999), Some(1_732_400_000_123));
        assert_eq!(TsUnit::S.int_to_ms(i64::MAX / 10), None, "overflow is out of range, not wrapped");
        assert_eq!(TsUnit::Ms.int_to_ms(MAX_MS), None);
        assert_eq!(TsUnit::S.float_to_ms(1_732_400_000.123), Some(1_732_400_000_123));
        assert_eq!(TsUnit::S.float_to_ms(1_732_400_000.123_9), Some(1_732_400_000_123));
        assert_eq!(TsUnit::Ms.float_to_ms(1_732_400_000_123.5), Some(1_732_400_000_123));
        assert_eq!(TsUnit::Us.float_to_ms(1.732_400_000_123e15), Some(1_732_400_000_123));
        assert_eq!(TsUnit::Ns.float_to_ms(1.732_400_000_123e18), Some(1_732_400_000_123));
        assert_eq!(TsUnit::Ms.float_to_ms(-1.0), None);
        assert_eq!(TsUnit::Ms.float_to_ms(f64::INFINITY), None);
        assert_eq!(TsUnit::S.float_to_ms(1e300), None);
    }

    #[test]
    fn telegraf_timestamps_are_seconds_by_default() {
        assert_eq!(InputFormat::Telegraf.default_ts_unit(), TsUnit::S);
        assert_eq!(InputFormat::Lineguard.default_ts_unit(), TsUnit::Ms);
    }
}
