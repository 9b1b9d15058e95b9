//! Engine work that would hold up the JavaScript thread (`writeFileAtomic`'s fsyncs,
//! the scans and process look-ups of `cleanupStaleLocks` and `forceRelease`) runs on
//! libuv's threadpool instead and settles a Promise, as `fs` calls do.

use napi::bindgen_prelude::{Env, Task, ToNapiValue, TypeName};

use super::errors as js_error;
use crate::engine::{LockError, Result};

type Work<T> = Box<dyn FnOnce() -> Result<T> + Send>;

pub struct EngineTask<T> {
    /// What the panic message says was going on.
    doing: &'static str,
    work: Option<Work<T>>,
    failure: Option<LockError>,
}

impl<T: ToNapiValue + TypeName + Send + 'static> EngineTask<T> {
    pub fn spawn(
        doing: &'static str,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> napi::bindgen_prelude::AsyncTask<Self> {
        napi::bindgen_prelude::AsyncTask::new(EngineTask {
            doing,
            work: Some(Box::new(work)),
            failure: None,
        })
    }
}

impl<T: ToNapiValue + TypeName + Send + 'static> Task for EngineTask<T> {
    type Output = T;
    type JsValue = T;

    fn compute(&mut self) -> napi::Result<T> {
        let work = self.work.take();
        // On a threadpool thread a panic would abort Node: it becomes `EPANIC` instead.
        let done = LockError::catch_panic(self.doing, || match work {
            Some(work) => work(),
            None => Err(LockError::invalid("the task already ran")),
        });
        done.map_err(|e| {
            let reason = e.message.clone();
            self.failure = Some(e);
            napi::Error::from_reason(reason)
        })
    }

    fn resolve(&mut self, _env: Env, output: T) -> napi::Result<T> {
        Ok(output)
    }

    /// Rejects with the engine's typed error (`code`, `path`), built on the JS thread.
    fn reject(&mut self, env: Env, err: napi::Error) -> napi::Result<T> {
        Err(self
            .failure
            .take()
            .map(|e| js_error::to_js(&env, e))
            .unwrap_or(err))
    }
}
