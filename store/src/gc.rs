//! TODO(gc): being written.
