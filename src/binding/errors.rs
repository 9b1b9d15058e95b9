//! Turns engine errors into JavaScript `Error`s whose `code` is the engine's code
//! (`ELOCKED`, `ENOENT`, ...) and whose `path` is the path involved, like Node's
//! own `fs` errors.

use napi::bindgen_prelude::{Env, Error, JsObjectValue, Status};
use napi::JsValue;

use crate::engine::{code, LockError};

pub fn to_js(env: &Env, err: LockError) -> Error {
    let build = || -> napi::Result<Error> {
        let mut object =
            env.create_error(Error::new(Status::GenericFailure, err.message.clone()))?;
        object.set_named_property("code", err.code.as_str())?;
        if let Some(path) = &err.path {
            object.set_named_property("path", path.to_string_lossy().as_ref())?;
        }
        if err.code == code::ABORTED {
            object.set_named_property("name", "AbortError")?;
        }
        Ok(Error::from(object.to_unknown()))
    };
    // If the error object itself cannot be built the env is going away; a plain
    // error with the code as its status still carries the code.
    build().unwrap_or_else(|_| {
        Error::new(
            Status::GenericFailure,
            format!("{}: {}", err.code, err.message),
        )
    })
}
