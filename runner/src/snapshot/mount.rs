//! Mounting overlayfs with any number of lowerdirs, and unmounting it.
//!
//! The classic `mount(2)` takes all options in one page (4095 bytes): with lowerdirs named
//! `<root>/snapshots/<64 hex>` that is about 50 layers. Two ways past it:
//!
//! - the new mount API (`fsopen("overlay")`, one `fsconfig("lowerdir+", dir)` per layer, then
//!   `fsmount` and `move_mount`), which has no length limit: kernel ≥ 6.8;
//! - on older kernels, `mount(2)` with the lowerdirs as short relative symlinks (`l/0`, `l/1`,
//!   …) resolved against the current directory of a helper thread that unshared its
//!   filesystem context (`unshare(CLONE_FS)`), so changing its directory does not move the
//!   rest of the process. This is docker's overlay2 trick, without its re-exec. When the
//!   absolute paths fit in a page, they are used as they are.
//!
//! Every mount sets `redirect_dir=off,index=off,metacopy=off` whatever the kernel's defaults:
//! the differ reads the upperdir as a plain tree, which redirects (renamed directories) and
//! metacopy (metadata-only copy-ups) would break.
//!
//! A writable mount is also `volatile` (kernel ≥ 5.10; left out on older ones): no sync of the
//! upper filesystem, whose unmount would otherwise `syncfs` the whole store filesystem, tens of
//! milliseconds per step. Nothing relies on the upperdir surviving a crash: it is read into a
//! layer blob (fsynced on its own) or thrown away, and never mounted again.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags, fsconfig_create,
    fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount, unmount,
};

/// Options that keep the upperdir a plain tree of changes (see the module docs).
const FIXED_OPTIONS: [(&str, &str); 3] = [("redirect_dir", "off"), ("index", "off"), ("metacopy", "off")];
/// `mount(2)` copies at most one page of options, including the terminating NUL.
const OPTIONS_MAX: usize = 4095;
/// The source name shown in `/proc/self/mountinfo` for kiln's overlays.
pub(crate) const MOUNT_SOURCE: &str = "kiln-overlay";

/// Which mount call to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountApi {
    /// The new mount API with `lowerdir+` when the kernel has it, else [`MountApi::Legacy`].
    Auto,
    /// Classic `mount(2)` only (short relative links when the paths do not fit a page).
    Legacy,
}

/// What to mount where.
pub(crate) struct OverlaySpec<'a> {
    /// Lower layers, top first (overlayfs's order). At least one.
    pub lowers: &'a [PathBuf],
    /// Upper and work directories; `None` for a read-only overlay of the lowers.
    pub upper: Option<(&'a Path, &'a Path)>,
    /// An empty directory owned by this mount, for the short links of the legacy path.
    pub scratch: &'a Path,
    pub target: &'a Path,
    pub api: MountApi,
}

/// Mounts the overlay. Errors are raw: the caller names the snapshot.
pub(crate) fn mount_overlay(spec: &OverlaySpec<'_>) -> io::Result<()> {
    if spec.api == MountApi::Auto {
        match mount_new_api(spec) {
            Ok(()) => return Ok(()),
            // ENOSYS: no fsopen (< 5.2). EINVAL on `lowerdir+`: overlay without it (< 6.8).
            Err(NewApiError::Unsupported) => {}
            Err(NewApiError::Failed(e)) => return Err(e),
        }
    }
    mount_legacy(spec)
}

enum NewApiError {
    Unsupported,
    Failed(io::Error),
}

fn mount_new_api(spec: &OverlaySpec<'_>) -> Result<(), NewApiError> {
    let failed =
        |what: &str, e: Errno| NewApiError::Failed(io::Error::other(format!("{what}: {}", io::Error::from(e))));
    let fs = match fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fs) => fs,
        Err(Errno::NOSYS) => return Err(NewApiError::Unsupported),
        Err(e) => return Err(failed("fsopen(overlay)", e)),
    };
    fsconfig_set_string(&fs, "source", MOUNT_SOURCE).map_err(|e| failed("fsconfig source", e))?;
    for (i, lower) in spec.lowers.iter().enumerate() {
        match fsconfig_set_string(&fs, "lowerdir+", lower.as_path()) {
            Ok(()) => {}
            Err(Errno::INVAL) if i == 0 => return Err(NewApiError::Unsupported),
            Err(e) => return Err(failed(&format!("fsconfig lowerdir+ {}", lower.display()), e)),
        }
    }
    if let Some((upper, work)) = spec.upper {
        fsconfig_set_string(&fs, "upperdir", upper).map_err(|e| failed("fsconfig upperdir", e))?;
        fsconfig_set_string(&fs, "workdir", work).map_err(|e| failed("fsconfig workdir", e))?;
        // Every kernel with `lowerdir+` has `volatile`.
        fsconfig_set_flag(&fs, "volatile").map_err(|e| failed("fsconfig volatile", e))?;
    }
    for (key, value) in FIXED_OPTIONS {
        fsconfig_set_string(&fs, key, value).map_err(|e| failed(&format!("fsconfig {key}={value}"), e))?;
    }
    fsconfig_create(&fs).map_err(|e| failed("creating the overlay superblock", e))?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty()).map_err(|e| failed("fsmount", e))?;
    move_mount(&mnt, "", rustix::fs::CWD, spec.target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| failed(&format!("move_mount to {}", spec.target.display()), e))
}

fn mount_legacy(spec: &OverlaySpec<'_>) -> io::Result<()> {
    match mount_legacy_with(spec, spec.upper.is_some()) {
        // Kernels before 5.10 do not know `volatile`.
        Err(e) if spec.upper.is_some() && e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
            mount_legacy_with(spec, false)
        }
        result => result,
    }
}

fn mount_legacy_with(spec: &OverlaySpec<'_>, volatile: bool) -> io::Result<()> {
    let lowers: Vec<&OsStr> = spec.lowers.iter().map(|p| p.as_os_str()).collect();
    let direct = legacy_options(&lowers, spec.upper, volatile)?;
    if direct.len() <= OPTIONS_MAX {
        return mount_data(spec.target, &direct);
    }
    // Too long: short links in `scratch`, resolved relative to a thread-private cwd.
    let names: Vec<String> = (0..spec.lowers.len()).map(|i| format!("{i:x}")).collect();
    for (name, lower) in names.iter().zip(spec.lowers) {
        symlink(lower, spec.scratch.join(name))?;
    }
    let short: Vec<&OsStr> = names.iter().map(OsStr::new).collect();
    let data = legacy_options(&short, spec.upper, volatile)?;
    if data.len() > OPTIONS_MAX {
        return Err(io::Error::other(format!("{} lower layers do not fit in mount(2)'s options", lowers.len())));
    }
    let scratch = spec.scratch.to_owned();
    let target = spec.target.to_owned();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: CLONE_FS only gives this thread its own cwd/root/umask; no fd table is
            // unshared, so no fd becomes invisible to other threads.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
            rustix::process::chdir(&scratch)?;
            mount_data(&target, &data)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the overlay mount thread panicked")))
    })
}

/// `lowerdir=…,upperdir=…,workdir=…` plus the fixed options. Paths with the option syntax's
/// separators cannot be written without escapes that older kernels do not all accept.
fn legacy_options(lowers: &[&OsStr], upper: Option<(&Path, &Path)>, volatile: bool) -> io::Result<Vec<u8>> {
    fn check(p: &OsStr) -> io::Result<&[u8]> {
        if p.as_bytes().iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
            return Err(io::Error::other(format!(
                "overlay path {} contains ',', ':' or '\\', which mount(2) options cannot carry",
                Path::new(p).display()
            )));
        }
        Ok(p.as_bytes())
    }
    let mut data = b"lowerdir=".to_vec();
    for (i, lower) in lowers.iter().enumerate() {
        if i > 0 {
            data.push(b':');
        }
        data.extend_from_slice(check(lower)?);
    }
    if let Some((u, w)) = upper {
        data.extend_from_slice(b",upperdir=");
        data.extend_from_slice(check(u.as_os_str())?);
        data.extend_from_slice(b",workdir=");
        data.extend_from_slice(check(w.as_os_str())?);
    }
    for (key, value) in FIXED_OPTIONS {
        data.extend_from_slice(format!(",{key}={value}").as_bytes());
    }
    if volatile {
        data.extend_from_slice(b",volatile");
    }
    Ok(data)
}

fn mount_data(target: &Path, data: &[u8]) -> io::Result<()> {
    let data = std::ffi::CString::new(data).map_err(|_| io::Error::other("overlay options contain a NUL byte"))?;
    rustix::mount::mount(MOUNT_SOURCE, target, "overlay", MountFlags::empty(), data.as_c_str())?;
    Ok(())
}

/// Detaches the mount at `target`; one that is not mounted is not an error.
pub(crate) fn unmount_overlay(target: &Path) -> io::Result<()> {
    match unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
        Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether `path` is a mount point, by its mount id against its parent's.
pub(crate) fn is_mount_point(path: &Path) -> io::Result<bool> {
    let parent = path.parent().unwrap_or(path);
    let id = |p: &Path| -> io::Result<(u64, u64)> {
        let st = rustix::fs::statx(
            rustix::fs::CWD,
            p,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            rustix::fs::StatxFlags::MNT_ID,
        )?;
        Ok((st.stx_mnt_id, u64::from(st.stx_dev_major) << 32 | u64::from(st.stx_dev_minor)))
    };
    match id(path) {
        Ok(own) => Ok(own != id(parent)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
