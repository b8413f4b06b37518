//! Telemetry in: which device a topic names, what its payload says.
//!
//! - [`topic`]: topic templates, parsed once (`plant/{line}/{machine}/telemetry`,
//!   or `uns/{line}/{machine}/{feature}` where the topic names the feature);
//! - [`format`](mod@format): which payload shape a pipeline reads (`input_format`) and
//!   the unit of its timestamps (`ts_unit`);
//! - [`decode`]: a whole-sample JSON payload (lineguard's, Telegraf's) into
//!   samples in the model's feature order, written straight into reused
//!   buffers;
//! - [`tag`]: one value per message into a row holding only it;
//! - [`kepware`]: KEPServerEX IoT Gateway messages, a row per record, each
//!   naming its own device;
//! - [`opcua`]: Azure IoT Operations' OPC UA connector JSON, a row per data point;
//! - [`reject`]: why a sample or payload is refused;
//! - [`input`]: what a pipeline reads (topic template and format settings),
//!   and `reader`, its way of reading them.
//!
//! Sparkplug B payloads are decoded in [`crate::sparkplug::input`].
//!
//! In: a topic and a payload. Out: rows of values in card order (NaN where
//! a message does not carry a feature), each with its `ts`, or rejections
//! with a reason. Invariants: nothing rejected is scored, no missing value
//! becomes a zero, and the per-message path allocates nothing.

pub mod decode;
pub mod format;
pub(crate) mod input;
pub mod kepware;
pub mod opcua;
pub mod reject;
pub mod tag;
pub mod topic;

mod reader;
pub(crate) use reader::Reader;
