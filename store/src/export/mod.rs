//! TODO(export): being written.
