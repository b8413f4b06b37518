//! Telemetry in: which device a topic names, what its payload says.
//!
//! - [`topic`]: topic templates, parsed once (`plant/{line}/{machine}/telemetry`);
//! - [`decode`]: a payload into samples in the model's feature order,
//!   written straight into reused buffers;
//! - [`reject`]: why a sample or payload is refused.
//!
//! In: a topic and a payload. Out: samples (`ts`, values in card order) or
//! rejections with a reason. Invariants: nothing rejected is scored, no
//! missing value becomes a zero, and the per-message path allocates nothing.

pub mod decode;
pub mod reject;
pub mod topic;
