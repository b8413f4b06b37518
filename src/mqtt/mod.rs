//! The broker connections.
//!
//! - [`settings`]: the `[mqtt]` section;
//! - [`options`]: how each connection is made (session, will, limits, TLS);
//! - [`protocol`]: MQTT 5 and 3.1.1 behind one set of calls;
//! - [`connection`]: one connection's loop, its role and its backoff;
//! - [`router`]: telemetry to the pipelines that take it;
//! - [`acker`]: the acknowledgements, once a message's effect is durable;
//! - [`relay`]: the telemetry connection's relay over 3.1.1, where a message
//!   too large to read becomes a stand-in.
//!
//! In: the broker's packets. Out: [`Inbound`](crate::pipeline::Inbound)
//! messages to the pipelines, and [`Link`](crate::durable::link::Link) news
//! to the sinks.

pub(crate) mod acker;
pub(crate) mod connection;
pub(crate) mod options;
pub(crate) mod protocol;
pub(crate) mod relay;
pub(crate) mod router;
mod settings;

pub(crate) use options::{connect, relay_limit, Purpose, Will};
pub(crate) use settings::{
    publisher_client_id, BrokerAddr, MqttSettings, PasswordSource, Protocol, TlsMaterial,
};
