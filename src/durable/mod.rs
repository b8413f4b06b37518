pub mod committer;
pub mod sink;
pub mod store;
