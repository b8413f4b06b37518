pub(crate) mod committer;
pub(crate) mod sink;
pub mod store;
