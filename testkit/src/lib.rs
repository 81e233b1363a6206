//! Fixtures shared by kiln's test suites (a dev-dependency only, never shipped).
//!
//! Everything here is real: [`registry`] starts Debian's `docker-registry` binary on a loopback
//! port; [`busybox`] makes a busybox root filesystem tar from the `busybox-static` package. A
//! fixture whose prerequisite is missing panics naming the package to install, so a test never
//! skips silently. [`skopeo`] runs the independent peer the interop tests compare with; [`kiln`]
//! runs the kiln binary against a store of the test's own. [`dockerd`] starts a private dockerd
//! (docker + BuildKit, the reference) and [`buildah`] runs a private buildah, the peers of the
//! differential tests.

pub mod buildah;
pub mod busybox;
pub mod dockerd;
pub mod http;
pub mod kiln;
pub mod registry;
pub mod skopeo;
