//! The differential fuzzer's parts: the reference model and the frame generator.
pub mod frames;
pub mod icmp;
pub mod model;
