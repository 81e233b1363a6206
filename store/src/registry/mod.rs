//! TODO(registry): being written.
