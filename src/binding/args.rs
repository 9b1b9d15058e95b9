//! Reads JavaScript arguments into engine types. Anything of the wrong type becomes
//! an `EINVAL` that names the argument or option, never napi's generic
//! "InvalidArg", so callers can branch on `err.code` as with every other error.

use napi::bindgen_prelude::{FromNapiValue, Object, Unknown};
use napi::ValueType;

use crate::engine::backend::redis::RedisConfig;
use crate::engine::{LockError, LockMode, Result, Wait};

fn kind(value: &Unknown) -> ValueType {
    value.get_type().unwrap_or(ValueType::Unknown)
}

fn describe(value: &Unknown) -> String {
    match kind(value) {
        ValueType::Number => unsafe { value.cast::<f64>() }
            .map(|n| format!("the number {n}"))
            .unwrap_or_default(),
        ValueType::Null => "null".into(),
        other => format!("a value of type {}", other.to_string().to_lowercase()),
    }
}

pub fn string(value: &Unknown, name: &str) -> Result<String> {
    if kind(value) != ValueType::String {
        return Err(LockError::invalid(format!(
            "{name} must be a string, got {}",
            describe(value)
        )));
    }
    unsafe { value.cast::<String>() }
        .map_err(|e| LockError::invalid(format!("{name}: {}", e.reason)))
}

/// The options object, or `None` for `undefined`/`null`.
pub fn options<'env>(value: Option<Unknown<'env>>, name: &str) -> Result<Option<Object<'env>>> {
    let Some(value) = value else { return Ok(None) };
    match kind(&value) {
        ValueType::Undefined | ValueType::Null => Ok(None),
        ValueType::Object => unsafe { value.cast::<Object>() }
            .map(Some)
            .map_err(|e| LockError::invalid(e.reason)),
        _ => Err(LockError::invalid(format!(
            "{name} must be an object, got {}",
            describe(&value)
        ))),
    }
}

fn field<'env>(options: &Object<'env>, key: &str) -> Result<Option<Unknown<'env>>> {
    let value: Option<Unknown> = options
        .get(key)
        .map_err(|e| LockError::invalid(format!("{key}: {}", e.reason)))?;
    Ok(value.filter(|v| !matches!(kind(v), ValueType::Undefined)))
}

pub fn optional_string(options: Option<&Object>, key: &str) -> Result<Option<String>> {
    let Some(options) = options else {
        return Ok(None);
    };
    field(options, key)?.map(|v| string(&v, key)).transpose()
}

/// The option `key` if it is set, checked to be of `expected` type (`what` names it).
fn optional_of<'env>(
    options: Option<&Object<'env>>,
    key: &str,
    expected: ValueType,
    what: &str,
) -> Result<Option<Unknown<'env>>> {
    let Some(options) = options else {
        return Ok(None);
    };
    let Some(value) = field(options, key)? else {
        return Ok(None);
    };
    if kind(&value) != expected {
        return Err(LockError::invalid(format!(
            "{key} must be {what}, got {}",
            describe(&value)
        )));
    }
    Ok(Some(value))
}

/// The option `key` read as `T`, once `optional_of` has checked its JS type.
fn optional_cast<T: FromNapiValue>(
    options: Option<&Object>,
    key: &str,
    expected: ValueType,
    what: &str,
) -> Result<Option<T>> {
    let Some(value) = optional_of(options, key, expected, what)? else {
        return Ok(None);
    };
    // SAFETY: `optional_of` checked the value's type against `expected`.
    unsafe { value.cast::<T>() }
        .map(Some)
        .map_err(|e| LockError::invalid(e.reason))
}

pub fn optional_number(options: Option<&Object>, key: &str) -> Result<Option<f64>> {
    optional_cast(options, key, ValueType::Number, "a number")
}

pub fn optional_wait(options: Option<&Object>, key: &str) -> Result<Option<Wait>> {
    optional_number(options, key)?
        .map(|ms| Wait::from_millis(ms, key))
        .transpose()
}

pub fn optional_mode(options: Option<&Object>) -> Result<Option<LockMode>> {
    let Some(text) = optional_string(options, "mode")? else {
        return Ok(None);
    };
    LockMode::parse(&text).map(Some).ok_or_else(|| {
        LockError::invalid(format!(
            "mode must be 'exclusive' or 'shared', got '{text}'"
        ))
    })
}

/// A duration option in milliseconds that must be a finite, non-negative number.
pub fn optional_millis(options: Option<&Object>, key: &str) -> Result<Option<u64>> {
    let Some(ms) = optional_number(options, key)? else {
        return Ok(None);
    };
    if !ms.is_finite() || ms < 0.0 {
        return Err(LockError::invalid(format!(
            "{key} must be a finite, non-negative number of milliseconds, got {ms}"
        )));
    }
    Ok(Some(ms as u64))
}

pub fn optional_bool(options: Option<&Object>, key: &str) -> Result<Option<bool>> {
    optional_cast(options, key, ValueType::Boolean, "a boolean")
}

/// The `redis` option: a URL, or `{ url, prefix, connectTimeout, responseTimeout,
/// tokenFloor }`; unset fields keep `base`'s (`LOCKWRIGHT_REDIS_URL` or the local
/// default).
pub fn optional_redis(options: Option<&Object>, base: RedisConfig) -> Result<Option<RedisConfig>> {
    let Some(options) = options else {
        return Ok(None);
    };
    let Some(value) = field(options, "redis")? else {
        return Ok(None);
    };
    if kind(&value) == ValueType::String {
        return Ok(Some(RedisConfig {
            url: string(&value, "redis")?,
            ..base
        }));
    }
    let Some(redis) = self::options(Some(value), "redis")? else {
        return Ok(None);
    };
    let redis = Some(&redis);
    let millis = |key: &str, default: std::time::Duration| -> Result<std::time::Duration> {
        Ok(optional_millis(redis, key)?
            .map(std::time::Duration::from_millis)
            .unwrap_or(default))
    };
    Ok(Some(RedisConfig {
        url: optional_string(redis, "url")?.unwrap_or(base.url),
        prefix: optional_string(redis, "prefix")?.unwrap_or(base.prefix),
        connect_timeout: millis("connectTimeout", base.connect_timeout)?,
        response_timeout: millis("responseTimeout", base.response_timeout)?,
        token_floor: optional_number(redis, "tokenFloor")?
            .map(|n| n.max(0.0) as u64)
            .unwrap_or(base.token_floor),
    }))
}
