pub mod decode;
pub mod reject;
pub mod topic;
