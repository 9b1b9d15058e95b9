//! The mechanisms a lock can be built on. Each backend is a folder that implements
//! `traits::Backend` (and its `Contend` and `HeldLock`); `factory` picks one. Backends
//! never import each other, and nothing here knows of Node.

pub mod factory;
pub mod kernel;
pub mod mkdir;
pub mod redis;
pub mod traits;

pub use factory::{open_backend, Strategy};
pub use traits::{Backend, Contend, HeldLock};
