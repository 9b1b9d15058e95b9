//! The fencing token of a mkdir lock, in `<lock>.token` beside it: proper-lockfile's
//! protocol has none, and a directory holds no content to keep one in.

use std::io;
use std::path::Path;

use crate::engine::error::{LockError, Result};
use crate::engine::lock_path::sibling;
use crate::engine::owner_record::{classify, Leftover, ReleasedRecord};
use crate::engine::safe_fs::{self, overwrite, Access, Create};

use super::TOKEN_SUFFIX;

/// The next fencing token for a grant of the lock directory `dir`, kept beside it.
/// Called only while holding the lock, so read-then-write cannot interleave.
pub(super) fn next_token(dir: &Path) -> Result<u64> {
    let path = sibling(dir, TOKEN_SUFFIX);
    let path = &path;
    let io_err = |action| move |e: io::Error| LockError::from_io(&e, action, path);
    let file =
        safe_fs::open_file(path, Access::ReadWrite, Create::IfMissing).map_err(io_err("open"))?;
    let content = safe_fs::read_bounded(&file).map_err(io_err("read"))?;
    let last = match classify(&content) {
        Leftover::Empty => 0,
        Leftover::Released => crate::engine::owner_record::last_token(&content),
        Leftover::DeadHolder(record) => record.token,
        Leftover::Foreign => {
            return Err(LockError::not_a_lock_file(
                path,
                "a file that is not a token record",
            ))
        }
    };
    let token = last + 1;
    let json = serde_json::to_vec(&ReleasedRecord { token }).expect("a token serialises");
    overwrite(&file, &json, content.len()).map_err(io_err("write"))?;
    Ok(token)
}
