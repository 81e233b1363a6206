//! kiln's builder: the solver that walks the build graph, cache keys, context hashing and
//! progress reporting. The `kiln` command-line interface (`src/main.rs`, `src/cli/`) is built
//! on it and on the `frontend`, `store` and `runner` crates.

pub mod fileop;
pub mod progress;
