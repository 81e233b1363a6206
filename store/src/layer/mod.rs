//! TODO(layer): being written. Layer tar encode/decode.

pub mod encode;
