//! TODO(registry fixture): being written.
