//! The Unix side: `openat` with `O_NOFOLLOW | O_NONBLOCK`, `fstat` checks, and
//! modes taken from the parent directory.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::{not_a_lock_file, Access, Create};

/// An open directory: names inside it are reached through its descriptor.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// The directory at `path` as the caller named it. Symlinks on the way are
    /// followed: that part of the path is the user's, not ours.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat(AT_FDCWD, path, flags, Mode::empty())?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A directory we make beside a lock (`<lock>.readers`), created if asked and
    /// missing, shared as this one is. Never through a symlink, and it must be a
    /// directory: `ELOOP`/`ENOTDIR` otherwise.
    pub fn sub_dir(&self, name: &OsStr, create: bool) -> io::Result<Dir> {
        if create {
            let mode = shared_mode(&fstat(self.fd.as_fd())?, 0o755);
            match mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(self.fd.as_fd(), name, flags, Mode::empty())?;
        let dir = Dir {
            fd,
            path: self.path.join(name),
        };
        if create {
            // mkdir's mode is cut by the umask; a shared parent's sharing is restored.
            let parent = fstat(self.fd.as_fd())?;
            let made = fstat(dir.fd.as_fd())?;
            let wanted = shared_mode(&parent, 0o755);
            if made.st_uid == nix::unistd::geteuid().as_raw() && made.st_mode & 0o7777 != wanted {
                let _ = fchmod(dir.fd.as_fd(), Mode::from_bits_truncate(wanted));
            }
        }
        Ok(dir)
    }

    /// Opens `name` in this directory as `open_file` does.
    pub fn open_file(&self, name: &OsStr, access: Access, create: Create) -> io::Result<File> {
        open_in(self.fd.as_fd(), name, access, create)
    }

    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        Ok(unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir)?)
    }

    /// The names in this directory, `.` and `..` left out.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut listing = nix::dir::Dir::openat(self.fd.as_fd(), ".", flags, Mode::empty())?;
        let mut names = Vec::new();
        for entry in listing.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(OsString::from(std::ffi::OsStr::from_bytes(&name)));
            }
        }
        Ok(names)
    }

    /// Whether `name` here is still the file `file` has open (same device and inode).
    pub fn holds(&self, name: &OsStr, file: &File) -> bool {
        let named = fstatat(
            self.fd.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        match (named, fstat(file.as_fd())) {
            (Ok(named), Ok(open)) => (named.st_dev, named.st_ino) == (open.st_dev, open.st_ino),
            _ => false,
        }
    }

    /// Who owns `name` here, for an `EACCES` that names the file's owner.
    pub fn owner_of(&self, name: &OsStr) -> Option<String> {
        let stat = fstatat(
            self.fd.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()?;
        Some(user_name(stat.st_uid))
    }
}

/// Opens a file beside a lock: the last component must not be a symlink and must be
/// a regular file; opening never blocks (a FIFO is refused, not waited on). Creation
/// happens only where nothing is: an existing name is opened without `O_CREAT`, which
/// Linux's `protected_regular` would refuse for another user's file in a sticky
/// directory.
pub fn open_file(path: &Path, access: Access, create: Create) -> io::Result<File> {
    open_in(AT_FDCWD, path.as_os_str(), access, create)
}

fn open_in(dir: BorrowedFd<'_>, name: &OsStr, access: Access, create: Create) -> io::Result<File> {
    let mut flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    flags |= match access {
        Access::Read => OFlag::O_RDONLY,
        Access::ReadWrite => OFlag::O_RDWR,
    };
    // Two rounds: a name removed between our two opens is created on the second.
    for _ in 0..2 {
        if create != Create::New {
            match openat(dir, name, flags, Mode::empty()) {
                Ok(fd) => return regular(fd),
                Err(Errno::ENOENT) if create == Create::IfMissing => {}
                Err(e) => return Err(e.into()),
            }
        }
        let excl = flags | OFlag::O_CREAT | OFlag::O_EXCL;
        match openat(dir, name, excl, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => {
                // Made private, then shared as the directory is: no moment where the
                // umask's mode shows, and the umask cannot keep other users out. If
                // that fails the file stays private, and is still ours to use: failing
                // here would leave an empty file behind for nothing.
                if let Ok(parent) = parent_stat(dir, name) {
                    let mode = shared_mode(&parent, 0o644) & 0o777;
                    let _ = fchmod(fd.as_fd(), Mode::from_bits_truncate(mode));
                }
                return regular(fd);
            }
            Err(Errno::EEXIST) if create == Create::IfMissing => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Errno::ENOENT.into())
}

fn parent_stat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<FileStat> {
    let path = Path::new(name);
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            Ok(fstatat(dir, parent, nix::fcntl::AtFlags::empty())?)
        }
        _ => Ok(fstatat(dir, ".", nix::fcntl::AtFlags::empty())?),
    }
}

/// `base`, plus the group and other write bits the directory grants (and its setgid
/// and sticky bits for a directory we make there): a lock file in `/tmp` (1777) is
/// 0666, in a group folder (2775) 0664, in a private one 0644.
fn shared_mode(parent: &FileStat, base: u32) -> u32 {
    let granted = parent.st_mode & 0o022;
    let inherited = if base & 0o111 != 0 {
        parent.st_mode & 0o3000 // setgid and sticky, for directories only
    } else {
        0
    };
    base | granted | inherited
}

/// Keeps `fd` only if it is a regular file.
fn regular(fd: OwnedFd) -> io::Result<File> {
    let stat = fstat(fd.as_fd())?;
    match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Ok(File::from(fd)),
        SFlag::S_IFDIR => Err(not_a_lock_file("a directory")),
        SFlag::S_IFIFO => Err(not_a_lock_file("a FIFO")),
        SFlag::S_IFSOCK => Err(not_a_lock_file("a socket")),
        SFlag::S_IFCHR | SFlag::S_IFBLK => Err(not_a_lock_file("a device")),
        _ => Err(not_a_lock_file("not a regular file")),
    }
}

/// Who owns `path`, for errors that name a file's owner.
pub fn owner_of(path: &Path) -> Option<String> {
    let stat = fstatat(AT_FDCWD, path, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    Some(user_name(stat.st_uid))
}

/// A user's name, or `uid N` where the name cannot be looked up.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}
