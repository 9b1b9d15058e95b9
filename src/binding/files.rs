//! File functions: `writeFileAtomic` and its sync twin.

use napi::bindgen_prelude::{AsyncTask, Buffer, Env, Unknown};
use napi_derive::napi;

use crate::engine::{self, LockError};

use super::args as js_args;
use super::calls::guarded;
use super::errors as js_error;

/// Replaces `path` with `data` so a crash leaves the old content or the new, never a
/// mix. Runs on the threadpool (fsync can take milliseconds); resolves when the new
/// content is durable.
#[napi(catch_unwind, ts_return_type = "Promise<void>")]
pub fn write_file_atomic(
    env: Env,
    path: Unknown,
    data: Buffer,
    options: Option<Unknown>,
) -> napi::Result<AsyncTask<super::engine_task::EngineTask<()>>> {
    let (path, options) =
        read_write_request(path, options).map_err(|e| js_error::to_js(&env, e))?;
    let data = data.to_vec();
    Ok(super::engine_task::EngineTask::spawn(
        "writing",
        move || engine::atomic_file::write_file_atomic(&path, &data, options),
    ))
}

#[napi(catch_unwind)]
pub fn write_file_atomic_sync(
    env: Env,
    path: Unknown,
    data: Buffer,
    options: Option<Unknown>,
) -> napi::Result<()> {
    let (path, options) =
        read_write_request(path, options).map_err(|e| js_error::to_js(&env, e))?;
    guarded(&env, || {
        engine::atomic_file::write_file_atomic(&path, &data, options)
    })
}

pub(crate) fn read_write_request(
    path: Unknown,
    options: Option<Unknown>,
) -> engine::Result<(std::path::PathBuf, engine::atomic_file::AtomicWriteOptions)> {
    let path = engine::lock_path::validate_path(&js_args::string(&path, "path")?, "path")?;
    let options = js_args::options(options, "options")?;
    let options = options.as_ref();
    let mode = match js_args::optional_number(options, "mode")? {
        Some(m) if m.is_finite() && m >= 0.0 && m <= 0o7777 as f64 && m.fract() == 0.0 => {
            Some(m as u32)
        }
        Some(m) => {
            return Err(LockError::invalid(format!(
                "mode must be a permission number such as 0o644, got {m}"
            )))
        }
        None => None,
    };
    let fsync = js_args::optional_bool(options, "fsync")?.unwrap_or(true);
    Ok((
        path,
        engine::atomic_file::AtomicWriteOptions { mode, fsync },
    ))
}
