//! The OCI runtime spec of a step: the one contract both runtimes (embedded libcontainer and
//! an external binary such as runc) receive, so both give a step the same sandbox. (The
//! embedded runtime gets `linux.seccomp` as the BPF program compiled from it, see
//! [`super::seccomp`].)
//!
//! The values follow Docker's and runc's defaults: the capability set of `docker run`,
//! runc's mounts, masked and read-only paths, the device cgroup allow-list, and Docker's
//! seccomp profile ([`super::seccomp`]).

use std::collections::HashSet;
use std::path::Path;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::rootfs::mount_point;
use super::{DEFAULT_PATH, Exec, Network, SandboxError, StepMount, seccomp};
use crate::user::ExecUser;

/// Docker's default capabilities (`docker run` without `--cap-add`), as both the enum and the
/// names the seccomp profile's conditions use.
pub(super) const DEFAULT_CAPS: [(Capability, &str); 14] = [
    (Capability::Chown, "CAP_CHOWN"),
    (Capability::DacOverride, "CAP_DAC_OVERRIDE"),
    (Capability::Fsetid, "CAP_FSETID"),
    (Capability::Fowner, "CAP_FOWNER"),
    (Capability::Mknod, "CAP_MKNOD"),
    (Capability::NetRaw, "CAP_NET_RAW"),
    (Capability::Setgid, "CAP_SETGID"),
    (Capability::Setuid, "CAP_SETUID"),
    (Capability::Setfcap, "CAP_SETFCAP"),
    (Capability::Setpcap, "CAP_SETPCAP"),
    (Capability::NetBindService, "CAP_NET_BIND_SERVICE"),
    (Capability::SysChroot, "CAP_SYS_CHROOT"),
    (Capability::Kill, "CAP_KILL"),
    (Capability::AuditWrite, "CAP_AUDIT_WRITE"),
];

/// Paths runc (and Docker) hide from a container by mounting `/dev/null` or an empty tmpfs.
const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths runc (and Docker) make read-only.
const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// CFS period for `--cpus`, Docker's.
const CPU_PERIOD_US: u64 = 100_000;

/// The character devices a step may use (runc's default allow-list): null, zero, full, tty,
/// urandom, random, console, ptmx, pts/*, tun.
const ALLOWED_DEVICES: [(i64, Option<i64>); 10] = [
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (5, Some(0)),
    (1, Some(9)),
    (1, Some(8)),
    (5, Some(1)),
    (5, Some(2)),
    (136, None),
    (10, Some(200)),
];

/// Everything the spec needs besides the step itself.
pub(super) struct SpecInput<'a> {
    /// The resolved user.
    pub user: &'a ExecUser,
    /// The directory holding `hosts`, `resolv.conf` and `hostname` for the step.
    pub files_dir: &'a Path,
    /// The step-only files that have a mount point in the rootfs.
    pub provided: &'a [&'static str],
    /// The cgroup path (relative to the cgroup root).
    pub cgroup_path: &'a str,
}

fn spec_err(e: oci_spec::OciSpecError) -> SandboxError {
    SandboxError::Io { what: "building the OCI runtime spec".into(), source: std::io::Error::other(e) }
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SandboxError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err)
}

/// `env` with `PATH` and `HOME` defaulted the way Docker does.
fn environment(exec: &Exec, user: &ExecUser) -> Vec<String> {
    let mut env = exec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    // The spec lives on the state directory's tmpfs only while the step runs.
    env.extend(exec.secret_env.iter().cloned());
    env
}

/// `path` as the UTF-8 text an OCI spec needs; `what` names it in the error.
fn utf8<'a>(path: &'a std::path::Path, what: &str) -> Result<&'a str, SandboxError> {
    path.to_str().ok_or_else(|| SandboxError::Io {
        what: format!("{what} {} is not UTF-8", path.display()),
        source: std::io::ErrorKind::InvalidInput.into(),
    })
}

/// The spec of `exec`.
pub(super) fn build(exec: &Exec, input: &SpecInput<'_>) -> Result<Spec, SandboxError> {
    let caps: HashSet<Capability> = DEFAULT_CAPS.iter().map(|(c, _)| *c).collect();
    let cap_names: Vec<&str> = DEFAULT_CAPS.iter().map(|(_, n)| *n).collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(spec_err)?;
    let user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid)
        .additional_gids(input.user.additional_gids.clone())
        .build()
        .map_err(spec_err)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(exec.args.clone())
        .env(environment(exec, input.user))
        .cwd(exec.cwd.clone())
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()
        .map_err(spec_err)?;

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
    ];
    for path in input.provided {
        let name = path.rsplit('/').next().unwrap_or(path);
        let source = input.files_dir.join(name);
        let source = utf8(&source, "the state directory")?;
        mounts.push(mount(&format!("/{path}"), "bind", source, &["rbind", "ro", "nosuid", "nodev", "noexec"])?);
    }
    for step_mount in &exec.mounts {
        mounts.push(match step_mount {
            StepMount::Bind { source, dest, readonly } => {
                let source = utf8(source, "the bind mount source")?;
                let access = if *readonly { "ro" } else { "rw" };
                mount(&mount_point(dest)?, "bind", source, &["rbind", access, "nosuid", "nodev"])?
            }
            StepMount::Tmpfs { dest, size } => {
                let size = size.map(|s| format!("size={s}"));
                let mut options = vec!["nosuid", "nodev", "mode=1777"];
                options.extend(size.as_deref());
                mount(&mount_point(dest)?, "tmpfs", "tmpfs", &options)?
            }
        });
    }

    let mut namespaces =
        vec![LinuxNamespaceType::Pid, LinuxNamespaceType::Mount, LinuxNamespaceType::Uts, LinuxNamespaceType::Ipc];
    if exec.network == Network::None {
        namespaces.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build().map_err(spec_err))
        .collect::<Result<Vec<_>, _>>()?;

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(MASKED_PATHS.iter().map(|p| p.to_string()).collect::<Vec<_>>())
        .readonly_paths(READONLY_PATHS.iter().map(|p| p.to_string()).collect::<Vec<_>>())
        .cgroups_path(input.cgroup_path)
        .resources(resources(exec)?)
        .seccomp(seccomp::default_profile(&cap_names))
        .build()
        .map_err(spec_err)?;

    let rootfs = utf8(&exec.rootfs, "the rootfs path")?;
    SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path(rootfs).readonly(false).build().map_err(spec_err)?)
        .hostname(exec.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(spec_err)
}

fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SandboxError> {
    let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access(access);
    if let Some(major) = major {
        b = b.major(major);
    }
    if let Some(minor) = minor {
        b = b.minor(minor);
    }
    b.build().map_err(spec_err)
}

/// Device allow-list and the step's limits.
fn resources(exec: &Exec) -> Result<oci_spec::runtime::LinuxResources, SandboxError> {
    let mut devices = vec![
        device_rule(false, LinuxDeviceType::A, None, None, "rwm")?,
        // mknod of any device node is allowed (CAP_MKNOD); opening them is not.
        device_rule(true, LinuxDeviceType::C, None, None, "m")?,
        device_rule(true, LinuxDeviceType::B, None, None, "m")?,
    ];
    for (major, minor) in ALLOWED_DEVICES {
        devices.push(device_rule(true, LinuxDeviceType::C, Some(major), minor, "rwm")?);
    }
    let mut b = LinuxResourcesBuilder::default().devices(devices);
    let limits = &exec.limits;
    if let Some(limit) = limits.memory {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // swap = limit: no swap on top of the memory limit, so the limit is what triggers OOM.
        b = b.memory(LinuxMemoryBuilder::default().limit(limit).swap(limit).build().map_err(spec_err)?);
    }
    if let Some(pids) = limits.pids {
        b = b.pids(LinuxPidsBuilder::default().limit(pids).build().map_err(spec_err)?);
    }
    if limits.cpus.is_some() || limits.cpu_shares.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(cpus) = limits.cpus {
            cpu = cpu.period(CPU_PERIOD_US).quota((cpus * CPU_PERIOD_US as f64).round() as i64);
        }
        if let Some(shares) = limits.cpu_shares {
            cpu = cpu.shares(shares);
        }
        b = b.cpu(cpu.build().map_err(spec_err)?);
    }
    b.build().map_err(spec_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Limits;

    #[test]
    fn limits_network_and_files_reach_the_spec() {
        let user = ExecUser { uid: 1000, gid: 1000, additional_gids: vec![10], home: "/home/app".into() };
        let mut exec = Exec::new("/rootfs", vec!["true".into()]);
        exec.network = Network::None;
        exec.env = vec!["HOME=/custom".into()];
        exec.limits = Limits { memory: Some(64 << 20), pids: Some(100), cpus: Some(1.5), cpu_shares: Some(512) };
        let input = SpecInput {
            user: &user,
            files_dir: Path::new("/state/x"),
            provided: &["etc/hosts"],
            cgroup_path: "/kiln/x",
        };
        let spec = build(&exec, &input).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let resources = linux.resources().as_ref().unwrap();
        let cpu = resources.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period(), cpu.shares()), (Some(150_000), Some(100_000), Some(512)));
        assert_eq!(resources.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 100);
        let ns: Vec<_> = linux.namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
        assert!(ns.contains(&LinuxNamespaceType::Network) && ns.contains(&LinuxNamespaceType::Pid));
        let process = spec.process().as_ref().unwrap();
        let env = process.env().as_ref().unwrap();
        assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
        assert!(env.contains(&"HOME=/custom".to_owned()) && !env.iter().any(|e| e == "HOME=/home/app"));
        assert_eq!(process.user().additional_gids().as_deref(), Some(&[10][..]));
        let hosts =
            spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/etc/hosts")).unwrap();
        assert_eq!(hosts.source().as_deref(), Some(Path::new("/state/x/hosts")));
        assert!(process.capabilities().as_ref().unwrap().bounding().as_ref().unwrap().len() == DEFAULT_CAPS.len());
    }
}
