pub mod events;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod logging;
pub(crate) mod reload;
pub(crate) mod signals;
pub(crate) mod status;
pub(crate) mod systemd;
