pub mod broker;
pub mod demo;
pub mod sim;
