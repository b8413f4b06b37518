pub mod ack;
pub mod options;
pub mod protocol;
pub mod relay;

pub use options::*;
