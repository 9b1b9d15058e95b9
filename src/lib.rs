#![deny(clippy::all)]
//! lockwright: inter-process locks for Node.js. `engine` does the work in plain Rust
//! (`cargo test` covers it alone); `binding` is the napi surface that converts values
//! and errors for JavaScript.

mod binding;
pub mod engine;
