pub mod events;
pub mod health;
pub mod http;
pub mod logging;
pub mod reload;
pub mod signals;
pub mod status;
pub mod systemd;
