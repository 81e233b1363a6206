//! TODO(busybox fixture): being written.
