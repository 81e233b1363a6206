//! TODO(encode): being written.
