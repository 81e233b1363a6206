//! `USER` resolution against an image's own `/etc/passwd` and `/etc/group`, the way runc's
//! `GetExecUser` does it for Docker and BuildKit.
//!
//! `USER name`, `USER uid`, `USER name:group`, `USER uid:gid` and mixes are accepted. Numeric ids
//! work without the files; a name that is not in them is an error naming it. Supplementary
//! groups (the primary group and every group listing the user as a member, in file order) are
//! set only when no group was given, as runc does. The files are opened with `RESOLVE_IN_ROOT`, so a symlinked `/etc/passwd` in an
//! image is followed inside the rootfs and can never make kiln read a file of the host.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// A resolved user: what the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary group ids (runc's: they include the primary group when `/etc/group` has it).
    pub additional_gids: Vec<u32>,
    /// The home directory from `/etc/passwd` (`/` when the user is not listed there).
    pub home: String,
}

/// Why a `USER` could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The user name is not in the image's `/etc/passwd`.
    #[error("unable to find user {user}: no matching entries in passwd file {passwd}")]
    UnknownUser {
        /// The name as written in `USER`.
        user: String,
        /// The passwd file that was searched (inside the rootfs).
        passwd: PathBuf,
    },
    /// The group name is not in the image's `/etc/group`.
    #[error("unable to find group {group}: no matching entries in group file {groupfile}")]
    UnknownGroup {
        /// The name as written in `USER`.
        group: String,
        /// The group file that was searched (inside the rootfs).
        groupfile: PathBuf,
    },
    /// `USER` is empty or malformed (`:` alone, a negative or too large id).
    #[error("invalid USER {0:?}")]
    Invalid(String),
    /// The passwd or group file exists but cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file inside the rootfs.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One line of `/etc/passwd`.
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One line of `/etc/group`.
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `spec` (the `USER` value; empty means root) against the files of `rootfs`.
pub fn resolve(rootfs: &Path, spec: &str) -> Result<ExecUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if group_part == Some("") || (user_part.is_empty() && group_part.is_some()) {
        return Err(UserError::Invalid(spec.to_owned()));
    }
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let passwd_path = Path::new("/etc/passwd");
    let group_path = Path::new("/etc/group");
    let users = read_entries(rootfs, passwd_path, parse_passwd)?;

    let numeric_uid = parse_id(user_part, spec)?;
    let found = users.iter().find(|u| match numeric_uid {
        Some(uid) => u.uid == uid,
        None => u.name == user_part,
    });
    let (uid, mut gid, home, name) = match (found, numeric_uid) {
        (Some(u), _) => (u.uid, u.gid, u.home.clone(), Some(u.name.clone())),
        (None, Some(uid)) => (uid, 0, "/".to_owned(), None),
        (None, None) => {
            return Err(UserError::UnknownUser { user: user_part.to_owned(), passwd: passwd_path.to_owned() });
        }
    };

    let needs_groups = match group_part {
        None => true,
        Some(g) => parse_id(g, spec)?.is_none(),
    };
    let groups = if needs_groups { read_entries(rootfs, group_path, parse_group)? } else { Vec::new() };

    let mut additional_gids = Vec::new();
    match group_part {
        Some(g) => {
            gid = match parse_id(g, spec)? {
                Some(id) => id,
                None => match groups.iter().find(|e| e.name == g) {
                    Some(e) => e.gid,
                    None => {
                        return Err(UserError::UnknownGroup { group: g.to_owned(), groupfile: group_path.to_owned() });
                    }
                },
            };
        }
        None => {
            // runc's filter: the primary group itself, and every group listing the user.
            let member = |g: &GroupEntry| name.as_ref().is_some_and(|n| g.members.contains(n));
            for g in groups.iter().filter(|g| g.gid == gid || member(g)) {
                if !additional_gids.contains(&g.gid) {
                    additional_gids.push(g.gid);
                }
            }
        }
    }
    Ok(ExecUser { uid, gid, additional_gids, home })
}

/// Resolves an owner spec (`COPY --chown`, the USER that owns a `WORKDIR`) to `(uid, gid)` the way
/// BuildKit's file ops do (`llb.WithUser` + `readUser`), which differs from [`resolve`]: a bare
/// numeric user gets gid = uid, a bare user name gets its primary group from `/etc/passwd`, and a
/// group name is looked up in `/etc/group`. Numeric ids need no files. Empty means root. Unlike
/// BuildKit, which silently uses 0 for a name it cannot find, an unknown name is an error naming it.
pub fn resolve_owner(rootfs: &Path, spec: &str) -> Result<(u32, u32), UserError> {
    if spec.is_empty() {
        return Ok((0, 0));
    }
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() || group_part == Some("") {
        return Err(UserError::Invalid(spec.to_owned()));
    }
    let passwd_path = Path::new("/etc/passwd");
    let (uid, mut gid) = match parse_id(user_part, spec)? {
        Some(id) => (id, id),
        None => {
            let users = read_entries(rootfs, passwd_path, parse_passwd)?;
            match users.iter().find(|u| u.name == user_part) {
                Some(u) => (u.uid, u.gid),
                None => {
                    return Err(UserError::UnknownUser { user: user_part.to_owned(), passwd: passwd_path.to_owned() });
                }
            }
        }
    };
    if let Some(g) = group_part {
        gid = match parse_id(g, spec)? {
            Some(id) => id,
            None => {
                let group_path = Path::new("/etc/group");
                let groups = read_entries(rootfs, group_path, parse_group)?;
                match groups.iter().find(|e| e.name == g) {
                    Some(e) => e.gid,
                    None => {
                        return Err(UserError::UnknownGroup { group: g.to_owned(), groupfile: group_path.to_owned() });
                    }
                }
            }
        };
    }
    Ok((uid, gid))
}

/// `Some(id)` for a decimal id, `None` for a name; ids beyond u32 are invalid, like runc.
fn parse_id(part: &str, spec: &str) -> Result<Option<u32>, UserError> {
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    part.parse::<u32>().map(Some).map_err(|_| UserError::Invalid(spec.to_owned()))
}

/// Reads one `/etc` database inside `rootfs`; a missing file is an empty database.
fn read_entries<T>(rootfs: &Path, path: &Path, parse: fn(&str) -> Option<T>) -> Result<Vec<T>, UserError> {
    let read_err = |source| UserError::Read { path: path.to_owned(), source };
    let root = rustix::fs::open(rootfs, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| UserError::Read { path: rootfs.to_owned(), source: e.into() })?;
    let relative = path.strip_prefix("/").unwrap_or(path);
    let fd = match rustix::fs::openat2(
        &root,
        relative,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e.into())),
    };
    let mut entries = Vec::new();
    for line in BufReader::new(File::from(fd)).lines() {
        let line = line.map_err(read_err)?;
        if let Some(entry) = parse(line.trim()) {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// `name:password:uid:gid:gecos:home:shell`; malformed lines are skipped, as libc does.
fn parse_passwd(line: &str) -> Option<PasswdEntry> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    Some(PasswdEntry {
        name: fields.first()?.to_string(),
        uid: fields.get(2)?.parse().ok()?,
        gid: fields.get(3)?.parse().ok()?,
        home: fields.get(5).filter(|h| !h.is_empty()).unwrap_or(&"/").to_string(),
    })
}

/// `name:password:gid:member,member`.
fn parse_group(line: &str) -> Option<GroupEntry> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    Some(GroupEntry {
        name: fields.first()?.to_string(),
        gid: fields.get(2)?.parse().ok()?,
        members: fields
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nbad line\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:app\n")
            .unwrap();
        dir
    }

    #[test]
    fn names_ids_groups_and_supplementary() {
        let dir = rootfs();
        let app = resolve(dir.path(), "app").unwrap();
        assert_eq!(
            app,
            ExecUser { uid: 1000, gid: 1000, additional_gids: vec![1000, 10, 29], home: "/home/app".into() }
        );
        assert_eq!(resolve(dir.path(), "").unwrap().home, "/root");
        let explicit = resolve(dir.path(), "app:wheel").unwrap();
        assert_eq!((explicit.uid, explicit.gid, explicit.additional_gids.len()), (1000, 10, 0));
        let numeric = resolve(dir.path(), "4242:77").unwrap();
        assert_eq!((numeric.uid, numeric.gid, numeric.home.as_str()), (4242, 77, "/"));
        assert_eq!(resolve(dir.path(), "1000").unwrap().gid, 1000);
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let dir = rootfs();
        let err = resolve(dir.path(), "ghost").unwrap_err().to_string();
        assert!(err.contains("unable to find user ghost"), "{err}");
        let err = resolve(dir.path(), "app:nogroup").unwrap_err().to_string();
        assert!(err.contains("unable to find group nogroup"), "{err}");
        assert!(resolve(dir.path(), "app:").is_err());
    }

    #[test]
    fn passwd_symlink_stays_inside_the_rootfs() {
        let dir = rootfs();
        std::fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        // On the host this would be the host's passwd; inside the rootfs it does not exist.
        std::os::unix::fs::symlink("/etc/../../../../etc/shadow", dir.path().join("etc/passwd")).unwrap();
        assert!(matches!(resolve(dir.path(), "root"), Err(UserError::UnknownUser { .. })));
        assert_eq!(resolve(dir.path(), "0").unwrap().uid, 0);
    }
}
