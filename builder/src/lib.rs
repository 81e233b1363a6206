//! kiln's builder: the solver that walks the build graph, cache keys, context hashing and
//! progress reporting. The `kiln` command-line interface (`src/main.rs`, `src/cli/`) is built
//! on it and on the `frontend`, `store` and `runner` crates.
//!
//! - [`build`]: one build, from Dockerfile text to a stored image;
//! - [`resolver`]: base images for the frontend, from the store or a registry;
//! - [`solver`]: the DAG walk, cache keys and the steps themselves;
//! - [`fileop`]: COPY/ADD/WORKDIR semantics and context checksums;
//! - [`image`]: image configs and history between the frontend and the store;
//! - [`progress`]: build events and their renderers.

pub mod build;
pub mod fileop;
pub mod image;
pub mod progress;
pub mod resolver;
pub mod solver;
