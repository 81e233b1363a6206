//! kiln's Dockerfile frontend: turns Dockerfile text plus build arguments into a build graph.
//!
//! Owns lexing and parsing (parser directives, heredocs, escapes, spans for errors),
//! shell-word expansion, `.dockerignore` patterns, stage resolution and lowering to the ops
//! of the build graph. It depends on nothing else of kiln.

pub mod ast;
pub mod config;
pub mod dockerignore;
pub mod error;
pub mod graph;
pub mod instructions;
pub mod parser;
pub mod shell;
pub mod stages;

pub use ast::{Directive, Dockerfile, Heredoc, Node, Warning};
pub use error::{DockerfileError, Pos, Source};
pub use parser::{parse, parse_str};
pub use stages::{BuildOptions, FrontendError, lower};
