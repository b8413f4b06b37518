//! Why a sample or message was refused.
//!
//! Every rejection carries a reason (a fixed label for metrics) and a detail
//! (for the rate-limited log line). Nothing rejected is ever scored.

use std::fmt;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, strum::VariantArray, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Reason {
    /// Payload larger than `limits.max_payload_bytes`.
    PayloadTooLarge,
    /// Not UTF-8 JSON, or JSON with a syntax error.
    InvalidJson,
    /// JSON, but not an object or array of objects with a `values` object.
    BadShape,
    /// A feature the model needs is absent.
    MissingFeature,
    /// A needed feature is a string, bool, null, array or object.
    NonNumeric,
    /// A needed feature is NaN or infinite.
    NonFinite,
    /// The same key twice in one object.
    DuplicateKey,
    /// `ts` is neither epoch milliseconds nor RFC 3339.
    BadTimestamp,
    /// `ts` older than the newest sample already in the device's window.
    OutOfOrder,
    /// `ts` further ahead of the gateway's clock than `limits.max_future_ms`.
    FutureTimestamp,
    /// An empty JSON array.
    EmptyBatch,
    /// JSON nested deeper than serde_json's recursion limit (128).
    TooDeep,
    /// More keys in `values` than `limits.max_keys_per_sample`.
    TooManyKeys,
    /// More samples in one array than `limits.max_samples_per_message`.
    TooManySamples,
    /// Not a Sparkplug B protobuf payload (on a `spBv1.0/...` input).
    InvalidSparkplug,
    /// Sparkplug DDATA with an alias not declared by the device's DBIRTH
    /// (a DBIRTH missed, e.g. published before lineguard started).
    UnknownAlias,
    /// A value whose quality flag says it is not good: treated as absent.
    BadQuality,
    /// A value stamped at or before a grid point already made final (the
    /// sampling clock has moved past it).
    Late,
    /// A sample without its own `ts`, where one is required (under
    /// `[redundancy]`: two instances would stamp its arrival differently).
    NoTs,
}

impl Reason {
    /// Metric label (`lineguard_rejected_total{reason}`), and the dead letter's `reason`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A refused sample (or whole payload) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}
