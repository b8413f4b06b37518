pub mod alarm;
pub mod render;
pub mod window;
pub mod worker;
