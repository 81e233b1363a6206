//! TODO(lock): being written.
