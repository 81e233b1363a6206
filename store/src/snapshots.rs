//! TODO(snapshots): being written.
