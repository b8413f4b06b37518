pub mod card;
pub mod check;
pub mod onnx;

pub use onnx::*;
