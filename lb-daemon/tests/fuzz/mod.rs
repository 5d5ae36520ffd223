//! The differential fuzzer's parts: the reference model and the frame generator.
pub mod frames;
pub mod model;
