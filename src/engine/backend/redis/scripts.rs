//! The Lua scripts, one per atomic step. Each is `common.lua` (clock, purge, grant,
//! handoff) followed by its own body, so they share one set of helpers.

use std::sync::LazyLock;

use redis::Script;

const COMMON: &str = include_str!("lua/common.lua");

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

pub(crate) static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| script(include_str!("lua/acquire.lua")));
pub(crate) static RENEW: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/renew.lua")));
pub(crate) static RELEASE: LazyLock<Script> =
    LazyLock::new(|| script(include_str!("lua/release.lua")));
pub(crate) static INSPECT: LazyLock<Script> =
    LazyLock::new(|| script(include_str!("lua/inspect.lua")));
pub(crate) static SWEEP: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/sweep.lua")));
