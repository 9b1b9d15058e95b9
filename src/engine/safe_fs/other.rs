//! Windows: no planted symlinks without privileges and no FIFOs in the file
//! namespace, so plain path operations, with the regular-file check kept.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::{not_a_lock_file, Access, Create};

#[derive(Debug)]
pub struct Dir {
    path: PathBuf,
}

impl Dir {
    pub fn open(path: &Path) -> io::Result<Dir> {
        if !fs::metadata(path)?.is_dir() {
            return Err(io::ErrorKind::NotADirectory.into());
        }
        Ok(Dir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sub_dir(&self, name: &OsStr, create: bool) -> io::Result<Dir> {
        let path = self.path.join(name);
        if create {
            match fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        if !fs::symlink_metadata(&path)?.is_dir() {
            return Err(io::ErrorKind::NotADirectory.into());
        }
        Ok(Dir { path })
    }

    pub fn open_file(&self, name: &OsStr, access: Access, create: Create) -> io::Result<File> {
        open_file(&self.path.join(name), access, create)
    }

    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        fs::remove_file(self.path.join(name))
    }

    pub fn names(&self) -> io::Result<Vec<OsString>> {
        Ok(fs::read_dir(&self.path)?
            .flatten()
            .map(|e| e.file_name())
            .collect())
    }

    /// Windows cannot remove or replace a file another process has open.
    pub fn holds(&self, name: &OsStr, _file: &File) -> bool {
        self.path.join(name).is_file()
    }

    pub fn owner_of(&self, _name: &OsStr) -> Option<String> {
        None
    }
}

pub fn open_file(path: &Path, access: Access, create: Create) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(access == Access::ReadWrite);
    match create {
        Create::No => {}
        Create::IfMissing => {
            options.create(true);
        }
        Create::New => {
            options.create_new(true);
        }
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_a_lock_file("not a regular file"));
    }
    Ok(file)
}

pub fn owner_of(_path: &Path) -> Option<String> {
    None
}

pub fn user_name(uid: u32) -> String {
    format!("uid {uid}")
}
