//! TODO(layer): being written.
