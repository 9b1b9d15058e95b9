//! `writeFileAtomic` off the JavaScript thread: fsync can take milliseconds, so the
//! write runs on libuv's threadpool, as Node's own `fs` calls do.

use std::path::PathBuf;

use napi::bindgen_prelude::{Env, Task};

use crate::engine::atomic_file::{write_file_atomic, AtomicWriteOptions};
use crate::engine::LockError;
use crate::js_error;

pub struct AtomicWriteTask {
    pub path: PathBuf,
    pub data: Vec<u8>,
    pub options: AtomicWriteOptions,
    pub failure: Option<LockError>,
}

impl Task for AtomicWriteTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        // On a threadpool thread a panic would abort Node: it becomes `EPANIC` instead.
        let written = LockError::catch_panic("writing", || {
            write_file_atomic(&self.path, &self.data, self.options)
        });
        written.map_err(|e| {
            let reason = e.message.clone();
            self.failure = Some(e);
            napi::Error::from_reason(reason)
        })
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> napi::Result<()> {
        Ok(())
    }

    /// Rejects with the engine's typed error (`code`, `path`), built on the JS thread.
    fn reject(&mut self, env: Env, err: napi::Error) -> napi::Result<()> {
        Err(self
            .failure
            .take()
            .map(|e| js_error::to_js(&env, e))
            .unwrap_or(err))
    }
}
