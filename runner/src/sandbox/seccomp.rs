//! Docker's default seccomp profile (moby `profiles/seccomp/default.json`) as a table, and its
//! resolution into an OCI `linux.seccomp` for the capabilities a step gets and the host's
//! architecture, the way moby's `setupSeccomp` does it.
//!
//! The table keeps moby's rule order and conditions (`includes`/`excludes` on capabilities and
//! architectures). moby's one `minKernel: 4.8` condition (ptrace and process_vm_*) is always met:
//! the sandbox needs a newer kernel anyway.
//!
//! For the embedded runtime the profile is also compiled here, in kiln, to the BPF program the
//! kernel loads ([`compiled`]): libseccomp takes ~9 ms to build it for three architectures,
//! which libcontainer would spend in every step's init. A program is compiled once per profile
//! and cached in memory and in the state directory (shared by kiln processes, keyed by the
//! profile and the libseccomp version); the step's init installs it right before exec
//! ([`Filter::load`]).

use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscallBuilder,
};

use super::SandboxError;

/// What a matching rule does.
#[derive(Clone, Copy)]
enum Act {
    Allow,
    Errno(u32),
}

/// One rule: syscalls, an optional argument condition, and moby's includes/excludes.
struct Rule {
    names: &'static [&'static str],
    act: Act,
    /// (argument index, value, operator); moby's default rules have at most one.
    arg: Option<(usize, u64, LinuxSeccompOperator)>,
    /// Applies only if the step has one of these capabilities.
    caps: &'static [&'static str],
    /// Applies only on these architectures (moby's Go names).
    arches: &'static [&'static str],
    /// Does not apply if the step has one of these capabilities.
    not_caps: &'static [&'static str],
    /// Does not apply on these architectures.
    not_arches: &'static [&'static str],
}

const fn allow(names: &'static [&'static str]) -> Rule {
    Rule { names, act: Act::Allow, arg: None, caps: &[], arches: &[], not_caps: &[], not_arches: &[] }
}

const fn allow_with_cap(cap: &'static [&'static str], names: &'static [&'static str]) -> Rule {
    Rule { names, act: Act::Allow, arg: None, caps: cap, arches: &[], not_caps: &[], not_arches: &[] }
}

const fn allow_on(arches: &'static [&'static str], names: &'static [&'static str]) -> Rule {
    Rule { names, act: Act::Allow, arg: None, caps: &[], arches, not_caps: &[], not_arches: &[] }
}

const fn personality(value: u64) -> Rule {
    Rule {
        names: &["personality"],
        act: Act::Allow,
        arg: Some((0, value, LinuxSeccompOperator::ScmpCmpEq)),
        caps: &[],
        arches: &[],
        not_caps: &[],
        not_arches: &[],
    }
}

/// Namespace flags clone(2) may not set without CAP_SYS_ADMIN (CLONE_NEWNS|NEWUTS|NEWIPC|NEWUSER|
/// NEWPID|NEWNET|NEWCGROUP), checked with SCMP_CMP_MASKED_EQ against 0.
const CLONE_NS_FLAGS: u64 = 2114060288;

/// moby's default.json, rule for rule.
static RULES: &[Rule] = &[
    allow(&[
        "accept",
        "accept4",
        "access",
        "adjtimex",
        "alarm",
        "bind",
        "brk",
        "capget",
        "capset",
        "chdir",
        "chmod",
        "chown",
        "chown32",
        "clock_adjtime",
        "clock_adjtime64",
        "clock_getres",
        "clock_getres_time64",
        "clock_gettime",
        "clock_gettime64",
        "clock_nanosleep",
        "clock_nanosleep_time64",
        "close",
        "close_range",
        "connect",
        "copy_file_range",
        "creat",
        "dup",
        "dup2",
        "dup3",
        "epoll_create",
        "epoll_create1",
        "epoll_ctl",
        "epoll_ctl_old",
        "epoll_pwait",
        "epoll_pwait2",
        "epoll_wait",
        "epoll_wait_old",
        "eventfd",
        "eventfd2",
        "execve",
        "execveat",
        "exit",
        "exit_group",
        "faccessat",
        "faccessat2",
        "fadvise64",
        "fadvise64_64",
        "fallocate",
        "fanotify_mark",
        "fchdir",
        "fchmod",
        "fchmodat",
        "fchown",
        "fchown32",
        "fchownat",
        "fcntl",
        "fcntl64",
        "fdatasync",
        "fgetxattr",
        "flistxattr",
        "flock",
        "fork",
        "fremovexattr",
        "fsetxattr",
        "fstat",
        "fstat64",
        "fstatat64",
        "fstatfs",
        "fstatfs64",
        "fsync",
        "ftruncate",
        "ftruncate64",
        "futex",
        "futex_time64",
        "futex_waitv",
        "futimesat",
        "getcpu",
        "getcwd",
        "getdents",
        "getdents64",
        "getegid",
        "getegid32",
        "geteuid",
        "geteuid32",
        "getgid",
        "getgid32",
        "getgroups",
        "getgroups32",
        "getitimer",
        "getpeername",
        "getpgid",
        "getpgrp",
        "getpid",
        "getppid",
        "getpriority",
        "getrandom",
        "getresgid",
        "getresgid32",
        "getresuid",
        "getresuid32",
        "getrlimit",
        "get_robust_list",
        "getrusage",
        "getsid",
        "getsockname",
        "getsockopt",
        "get_thread_area",
        "gettid",
        "gettimeofday",
        "getuid",
        "getuid32",
        "getxattr",
        "inotify_add_watch",
        "inotify_init",
        "inotify_init1",
        "inotify_rm_watch",
        "io_cancel",
        "ioctl",
        "io_destroy",
        "io_getevents",
        "io_pgetevents",
        "io_pgetevents_time64",
        "ioprio_get",
        "ioprio_set",
        "io_setup",
        "io_submit",
        "io_uring_enter",
        "io_uring_register",
        "io_uring_setup",
        "ipc",
        "kill",
        "landlock_add_rule",
        "landlock_create_ruleset",
        "landlock_restrict_self",
        "lchown",
        "lchown32",
        "lgetxattr",
        "link",
        "linkat",
        "listen",
        "listxattr",
        "llistxattr",
        "_llseek",
        "lremovexattr",
        "lseek",
        "lsetxattr",
        "lstat",
        "lstat64",
        "madvise",
        "membarrier",
        "memfd_create",
        "memfd_secret",
        "mincore",
        "mkdir",
        "mkdirat",
        "mknod",
        "mknodat",
        "mlock",
        "mlock2",
        "mlockall",
        "mmap",
        "mmap2",
        "mprotect",
        "mq_getsetattr",
        "mq_notify",
        "mq_open",
        "mq_timedreceive",
        "mq_timedreceive_time64",
        "mq_timedsend",
        "mq_timedsend_time64",
        "mq_unlink",
        "mremap",
        "msgctl",
        "msgget",
        "msgrcv",
        "msgsnd",
        "msync",
        "munlock",
        "munlockall",
        "munmap",
        "name_to_handle_at",
        "nanosleep",
        "newfstatat",
        "_newselect",
        "open",
        "openat",
        "openat2",
        "pause",
        "pidfd_open",
        "pidfd_send_signal",
        "pipe",
        "pipe2",
        "pkey_alloc",
        "pkey_free",
        "pkey_mprotect",
        "poll",
        "ppoll",
        "ppoll_time64",
        "prctl",
        "pread64",
        "preadv",
        "preadv2",
        "prlimit64",
        "process_mrelease",
        "pselect6",
        "pselect6_time64",
        "pwrite64",
        "pwritev",
        "pwritev2",
        "read",
        "readahead",
        "readlink",
        "readlinkat",
        "readv",
        "recv",
        "recvfrom",
        "recvmmsg",
        "recvmmsg_time64",
        "recvmsg",
        "remap_file_pages",
        "removexattr",
        "rename",
        "renameat",
        "renameat2",
        "restart_syscall",
        "rmdir",
        "rseq",
        "rt_sigaction",
        "rt_sigpending",
        "rt_sigprocmask",
        "rt_sigqueueinfo",
        "rt_sigreturn",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "rt_sigtimedwait_time64",
        "rt_tgsigqueueinfo",
        "sched_getaffinity",
        "sched_getattr",
        "sched_getparam",
        "sched_get_priority_max",
        "sched_get_priority_min",
        "sched_getscheduler",
        "sched_rr_get_interval",
        "sched_rr_get_interval_time64",
        "sched_setaffinity",
        "sched_setattr",
        "sched_setparam",
        "sched_setscheduler",
        "sched_yield",
        "seccomp",
        "select",
        "semctl",
        "semget",
        "semop",
        "semtimedop",
        "semtimedop_time64",
        "send",
        "sendfile",
        "sendfile64",
        "sendmmsg",
        "sendmsg",
        "sendto",
        "setfsgid",
        "setfsgid32",
        "setfsuid",
        "setfsuid32",
        "setgid",
        "setgid32",
        "setgroups",
        "setgroups32",
        "setitimer",
        "setpgid",
        "setpriority",
        "setregid",
        "setregid32",
        "setresgid",
        "setresgid32",
        "setresuid",
        "setresuid32",
        "setreuid",
        "setreuid32",
        "setrlimit",
        "set_robust_list",
        "setsid",
        "setsockopt",
        "set_thread_area",
        "set_tid_address",
        "setuid",
        "setuid32",
        "setxattr",
        "shmat",
        "shmctl",
        "shmdt",
        "shmget",
        "shutdown",
        "sigaltstack",
        "signalfd",
        "signalfd4",
        "sigprocmask",
        "sigreturn",
        "socketcall",
        "socketpair",
        "splice",
        "stat",
        "stat64",
        "statfs",
        "statfs64",
        "statx",
        "symlink",
        "symlinkat",
        "sync",
        "sync_file_range",
        "syncfs",
        "sysinfo",
        "tee",
        "tgkill",
        "time",
        "timer_create",
        "timer_delete",
        "timer_getoverrun",
        "timer_gettime",
        "timer_gettime64",
        "timer_settime",
        "timer_settime64",
        "timerfd_create",
        "timerfd_gettime",
        "timerfd_gettime64",
        "timerfd_settime",
        "timerfd_settime64",
        "times",
        "tkill",
        "truncate",
        "truncate64",
        "ugetrlimit",
        "umask",
        "uname",
        "unlink",
        "unlinkat",
        "utime",
        "utimensat",
        "utimensat_time64",
        "utimes",
        "vfork",
        "vmsplice",
        "wait4",
        "waitid",
        "waitpid",
        "write",
        "writev",
    ]),
    allow(&["process_vm_readv", "process_vm_writev", "ptrace"]),
    Rule {
        names: &["socket"],
        act: Act::Allow,
        // AF_VSOCK (40) stays blocked.
        arg: Some((0, 40, LinuxSeccompOperator::ScmpCmpNe)),
        caps: &[],
        arches: &[],
        not_caps: &[],
        not_arches: &[],
    },
    personality(0),
    personality(8),
    personality(131072),
    personality(131080),
    personality(4294967295),
    allow_on(&["ppc64le"], &["sync_file_range2", "swapcontext"]),
    allow_on(
        &["arm", "arm64"],
        &["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"],
    ),
    allow_on(&["amd64", "x32"], &["arch_prctl"]),
    allow_on(&["amd64", "x32", "x86"], &["modify_ldt"]),
    allow_on(&["s390", "s390x"], &["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"]),
    allow_on(&["riscv64"], &["riscv_flush_icache"]),
    allow_with_cap(&["CAP_DAC_READ_SEARCH"], &["open_by_handle_at"]),
    allow_with_cap(
        &["CAP_SYS_ADMIN"],
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    Rule {
        names: &["clone"],
        act: Act::Allow,
        arg: Some((0, CLONE_NS_FLAGS, LinuxSeccompOperator::ScmpCmpMaskedEq)),
        caps: &[],
        arches: &[],
        not_caps: &["CAP_SYS_ADMIN"],
        not_arches: &["s390", "s390x"],
    },
    Rule {
        names: &["clone"],
        act: Act::Allow,
        // s390's clone takes the flags second.
        arg: Some((1, CLONE_NS_FLAGS, LinuxSeccompOperator::ScmpCmpMaskedEq)),
        caps: &[],
        arches: &["s390", "s390x"],
        not_caps: &["CAP_SYS_ADMIN"],
        not_arches: &[],
    },
    Rule {
        names: &["clone3"],
        // ENOSYS, so libcs fall back to clone(2), whose flags the rule above can inspect.
        act: Act::Errno(38),
        arg: None,
        caps: &[],
        arches: &[],
        not_caps: &["CAP_SYS_ADMIN"],
        not_arches: &[],
    },
    allow_with_cap(&["CAP_SYS_BOOT"], &["reboot"]),
    allow_with_cap(&["CAP_SYS_CHROOT"], &["chroot"]),
    allow_with_cap(&["CAP_SYS_MODULE"], &["delete_module", "init_module", "finit_module"]),
    allow_with_cap(&["CAP_SYS_PACCT"], &["acct"]),
    allow_with_cap(
        &["CAP_SYS_PTRACE"],
        &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"],
    ),
    allow_with_cap(&["CAP_SYS_RAWIO"], &["iopl", "ioperm"]),
    allow_with_cap(&["CAP_SYS_TIME"], &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    allow_with_cap(&["CAP_SYS_TTY_CONFIG"], &["vhangup"]),
    allow_with_cap(&["CAP_SYS_NICE"], &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    allow_with_cap(&["CAP_SYSLOG"], &["syslog"]),
    allow_with_cap(&["CAP_BPF"], &["bpf"]),
    allow_with_cap(&["CAP_PERFMON"], &["perf_event_open"]),
];

/// moby's name for the architecture kiln was built for, and the seccomp architectures it covers
/// (the native one and its compat sub-architectures, moby's `archMap`).
fn host_arch() -> (&'static str, Vec<Arch>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]),
        "aarch64" => ("arm64", vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]),
        "s390x" => ("s390x", vec![Arch::ScmpArchS390x, Arch::ScmpArchS390]),
        "riscv64" => ("riscv64", vec![Arch::ScmpArchRiscv64]),
        "powerpc64" => ("ppc64le", vec![Arch::ScmpArchPpc64le]),
        other => (other, vec![Arch::ScmpArchNative]),
    }
}

/// Docker's default profile for a process holding `caps` (names like `CAP_CHOWN`).
pub fn default_profile(caps: &[&str]) -> LinuxSeccomp {
    let (arch, architectures) = host_arch();
    let has_any = |list: &[&str]| list.iter().any(|c| caps.contains(c));
    let syscalls = RULES
        .iter()
        .filter(|r| r.caps.is_empty() || has_any(r.caps))
        .filter(|r| r.arches.is_empty() || r.arches.contains(&arch))
        .filter(|r| !has_any(r.not_caps) && !r.not_arches.contains(&arch))
        .map(|r| {
            let mut b = LinuxSyscallBuilder::default().names(r.names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
            b = match r.act {
                Act::Allow => b.action(LinuxSeccompAction::ScmpActAllow),
                Act::Errno(errno) => b.action(LinuxSeccompAction::ScmpActErrno).errno_ret(errno),
            };
            if let Some((index, value, op)) = r.arg {
                let arg = LinuxSeccompArgBuilder::default().index(index).value(value).op(op).build();
                b = b.args(vec![arg.expect("all fields of a seccomp argument are set")]);
            }
            b.build().expect("all fields of a seccomp rule are set")
        })
        .collect::<Vec<_>>();
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(1u32)
        .architectures(architectures)
        .syscalls(syscalls)
        .build()
        .expect("all fields of a seccomp profile are set")
}

/// Size of one BPF instruction (`struct sock_filter`).
const INSN: usize = std::mem::size_of::<libc::sock_filter>();

fn compile_err(what: impl std::fmt::Display) -> impl FnOnce(libseccomp::error::SeccompError) -> SandboxError {
    let what = format!("compiling the seccomp profile: {what}");
    move |e| SandboxError::Io { what, source: std::io::Error::other(e) }
}

fn scmp_action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SandboxError> {
    // The OCI default errno is EPERM, as in runc and libcontainer.
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(u16::try_from(errno).map_err(|_| SandboxError::Io {
            what: format!("compiling the seccomp profile: the trace value {errno} does not fit 16 bits"),
            source: std::io::ErrorKind::InvalidInput.into(),
        })?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        // A notify action needs a listener process; the precompiled route has none.
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SandboxError::Io {
                what: "compiling the seccomp profile: SCMP_ACT_NOTIFY is not supported".into(),
                source: std::io::ErrorKind::Unsupported.into(),
            });
        }
    })
}

/// One argument condition. For SCMP_CMP_MASKED_EQ, `value` is the mask and `valueTwo` the datum,
/// as runc (and libseccomp's `SCMP_A0(SCMP_CMP_MASKED_EQ, mask, datum)`) read them. libcontainer
/// 0.7 swaps the two, which turns Docker's `clone` rule (flags & namespace flags == 0) into a
/// match for every flag value: it let a step clone(CLONE_NEWUSER).
fn scmp_compare(arg: &oci_spec::runtime::LinuxSeccompArg) -> ScmpArgCompare {
    let index = arg.index() as u32;
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(arg.value()), arg.value_two().unwrap_or(0));
        }
    };
    ScmpArgCompare::new(index, op, arg.value())
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// `profile` compiled by libseccomp to the BPF program (`struct sock_filter`s in host byte
/// order) that loading it would install, rule for rule as runc adds them.
pub(super) fn compile(profile: &LinuxSeccomp) -> Result<Vec<u8>, SandboxError> {
    if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        // Filter flags are arguments of the load, not part of the program.
        return Err(SandboxError::Io {
            what: "compiling the seccomp profile: filter flags are not supported".into(),
            source: std::io::ErrorKind::Unsupported.into(),
        });
    }
    let default = scmp_action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(compile_err("creating the filter"))?;
    for arch in profile.architectures().iter().flatten() {
        ctx.add_arch(scmp_arch(*arch)).map_err(compile_err("adding an architecture"))?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let action = scmp_action(rule.action(), rule.errno_ret())?;
        if action == default {
            continue; // libseccomp rejects a rule that repeats the default action
        }
        let conditions: Vec<ScmpArgCompare> = rule.args().iter().flatten().map(scmp_compare).collect();
        let mut indexes: Vec<u32> = rule.args().iter().flatten().map(|a| a.index() as u32).collect();
        indexes.sort_unstable();
        let repeated_index = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            // A name this libseccomp does not know (a newer syscall) is skipped, as runc does.
            let Ok(syscall) = ScmpSyscall::from_name(name) else { continue };
            let what = || compile_err(format!("the rule for {name}"));
            if conditions.is_empty() {
                ctx.add_rule(action, syscall).map_err(what())?;
            } else if repeated_index {
                // Two conditions on one argument can only be alternatives (runc adds them so).
                for condition in &conditions {
                    ctx.add_rule_conditional(action, syscall, std::slice::from_ref(condition)).map_err(what())?;
                }
            } else {
                ctx.add_rule_conditional(action, syscall, &conditions).map_err(what())?;
            }
        }
    }
    let io = |what: &str| {
        let what = format!("compiling the seccomp profile: {what}");
        move |source| SandboxError::Io { what, source }
    };
    let out = rustix::fs::memfd_create("kiln-seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| io("creating a memfd")(e.into()))?;
    let mut out = std::fs::File::from(out);
    ctx.export_bpf(&out).map_err(compile_err("exporting the BPF program"))?;
    let mut program = Vec::new();
    out.rewind().and_then(|_| out.read_to_end(&mut program)).map_err(io("reading the BPF program"))?;
    if !is_program(&program) {
        return Err(io("libseccomp exported no valid BPF program")(std::io::ErrorKind::InvalidData.into()));
    }
    Ok(program)
}

/// Whether `bytes` has the shape of a BPF program the kernel may accept.
fn is_program(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.len() % INSN == 0 && bytes.len() / INSN <= libc::BPF_MAXINSNS as usize
}

/// Programs compiled (or read from the cache directory) by this process, by cache key.
static COMPILED: LazyLock<Mutex<HashMap<String, Arc<Vec<u8>>>>> = LazyLock::new(Mutex::default);

/// The program of `profile`: from memory, from `cache_dir`, or compiled (and stored in both).
pub(super) fn compiled(profile: &LinuxSeccomp, cache_dir: &Path) -> Result<Arc<Vec<u8>>, SandboxError> {
    let key = cache_key(profile)?;
    // A panic while holding the lock leaves the map consistent: every insert is one call.
    if let Some(hit) = COMPILED.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return Ok(hit.clone());
    }
    let path = cache_dir.join(format!("{key}.bpf"));
    let program = match std::fs::read(&path) {
        Ok(bytes) if is_program(&bytes) => bytes,
        Ok(_) => store(cache_dir, &path, compile(profile)?)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => store(cache_dir, &path, compile(profile)?)?,
        Err(source) => return Err(SandboxError::Io { what: format!("reading {}", path.display()), source }),
    };
    let program = Arc::new(program);
    COMPILED.lock().unwrap_or_else(PoisonError::into_inner).insert(key, program.clone());
    Ok(program)
}

/// The cache key of `profile`: its digest with libseccomp's version (which may compile the same
/// profile differently, e.g. know more syscalls).
fn cache_key(profile: &LinuxSeccomp) -> Result<String, SandboxError> {
    let version = libseccomp::ScmpVersion::current().map_err(compile_err("reading the libseccomp version"))?;
    let encoded = serde_json::to_vec(&((version.major, version.minor, version.micro), profile))
        .map_err(|e| SandboxError::Io { what: "encoding the seccomp profile".into(), source: e.into() })?;
    Ok(kiln_store::digest::Digest::of(&encoded).hex().to_owned())
}

/// Writes `program` to `path` atomically (temp file, fsync, rename) and returns it.
fn store(dir: &Path, path: &Path, program: Vec<u8>) -> Result<Vec<u8>, SandboxError> {
    let io = |source| SandboxError::Io { what: format!("writing {}", path.display()), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    file.write_all(&program).and_then(|_| file.as_file().sync_all()).map_err(io)?;
    file.persist(path).map_err(|e| io(e.error))?;
    Ok(program)
}

/// A BPF program ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
#[derive(Clone)]
pub(super) struct Filter(Vec<libc::sock_filter>);

impl Filter {
    /// The program in `bytes` (as [`compile`] makes it), or why it is not one.
    pub(super) fn from_bytes(bytes: &[u8]) -> Result<Filter, String> {
        if !is_program(bytes) {
            return Err(format!("a seccomp program of {} bytes is not a whole BPF program", bytes.len()));
        }
        let insns = bytes
            .chunks_exact(INSN)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        Ok(Filter(insns))
    }

    /// Installs the filter on the calling process (single-threaded: no TSYNC needed), as
    /// libseccomp's `seccomp_load` would: no flags. `no_new_privs` must be set already.
    pub(super) fn load(&self) -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            // is_program bounds the length by BPF_MAXINSNS, which fits.
            len: self.0.len() as libc::c_ushort,
            filter: self.0.as_ptr().cast_mut(),
        };
        // SAFETY: prog points to len valid instructions that outlive the call; the kernel copies them.
        let r = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog) };
        if r != 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::*;

    fn allowed(profile: &LinuxSeccomp, name: &str) -> Vec<LinuxSeccompAction> {
        let rules = profile.syscalls().as_ref().unwrap();
        rules.iter().filter(|r| r.names().iter().any(|n| n == name)).map(|r| r.action()).collect()
    }

    #[test]
    fn capabilities_decide_the_conditional_rules() {
        let p = default_profile(&["CAP_CHOWN", "CAP_SYS_CHROOT"]);
        assert_eq!(allowed(&p, "chroot"), vec![LinuxSeccompAction::ScmpActAllow]);
        assert!(allowed(&p, "mount").is_empty());
        assert_eq!(allowed(&p, "clone3"), vec![LinuxSeccompAction::ScmpActErrno]);
        let admin = default_profile(&["CAP_SYS_ADMIN"]);
        assert_eq!(allowed(&admin, "mount"), vec![LinuxSeccompAction::ScmpActAllow]);
        assert!(allowed(&admin, "chroot").is_empty());
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
    }

    /// What a syscall returned in the probe: `Ok` or the errno.
    fn outcome(r: libc::c_long) -> Result<(), i32> {
        // SAFETY: __errno_location is the calling thread's errno.
        if r < 0 { Err(unsafe { *libc::__errno_location() }) } else { Ok(()) }
    }

    /// Runs `probe` in a forked child under `filter` (with no_new_privs, as in a step) and returns
    /// its results. The child makes raw syscalls only: the parent is a multi-threaded test binary.
    fn under_filter<const N: usize>(filter: &Filter, probe: fn() -> [Result<(), i32>; N]) -> [Result<(), i32>; N] {
        let mut fds = [0; 2];
        // SAFETY: fds is two writable ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 made two descriptors nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child only calls async-signal-safe functions before _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: prctl and write have no memory-safety preconditions; the buffer is valid.
            unsafe {
                let mut codes = [0i32; N];
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || filter.load().is_err() {
                    libc::_exit(2);
                }
                for (code, result) in codes.iter_mut().zip(probe()) {
                    *code = result.err().unwrap_or(0);
                }
                libc::write(write.as_raw_fd(), codes.as_ptr().cast(), std::mem::size_of_val(&codes));
                libc::_exit(0);
            }
        }
        drop(write);
        let mut status = 0;
        // SAFETY: status is a valid int.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the probe failed: status {status}");
        let mut bytes = Vec::new();
        std::fs::File::from(read).read_to_end(&mut bytes).unwrap();
        let codes: Vec<i32> = bytes.chunks_exact(4).map(|c| i32::from_ne_bytes(c.try_into().unwrap())).collect();
        std::array::from_fn(|i| if codes[i] == 0 { Ok(()) } else { Err(codes[i]) })
    }

    /// A clone(2) with `flags` whose child exits at once; reaped when it was created.
    fn clone_with(flags: libc::c_long) -> Result<(), i32> {
        // SAFETY: without CLONE_VM the child gets a copy of the address space, like fork.
        let pid = unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
        if pid == 0 {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        if pid > 0 {
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
        }
        outcome(pid)
    }

    #[test]
    fn the_compiled_filter_denies_what_docker_denies() {
        let caps: Vec<&str> = crate::sandbox::spec::DEFAULT_CAPS.iter().map(|(_, name)| *name).collect();
        let program = compile(&default_profile(&caps)).unwrap();
        let filter = Filter::from_bytes(&program).unwrap();
        let results = under_filter(&filter, || {
            // SAFETY: raw syscalls with valid (or ignored) arguments.
            unsafe {
                [
                    clone_with(0),
                    // Docker's clone rule: no namespace flag without CAP_SYS_ADMIN (the kernel
                    // alone lets anyone make a user namespace).
                    clone_with(libc::CLONE_NEWUSER as libc::c_long),
                    outcome(libc::syscall(libc::SYS_keyctl, 0, -3, 0)),
                    outcome(libc::syscall(libc::SYS_personality, 0xffff_ffffu32)),
                    // ADDR_NO_RANDOMIZE: not one of the allowed personality values.
                    outcome(libc::syscall(libc::SYS_personality, 0x0040000)),
                    outcome(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER)),
                ]
            }
        });
        let eperm = Err(libc::EPERM);
        assert_eq!(results, [Ok(()), eperm, eperm, Ok(()), eperm, eperm]);
    }

    #[test]
    fn programs_are_cached_on_disk_and_a_damaged_one_is_recompiled() {
        // A profile no other test compiles, so the process-wide memo does not answer first.
        let profile = default_profile(&["CAP_SYSLOG", "CAP_BPF"]);
        let dir = tempfile::tempdir().unwrap();
        let key = cache_key(&profile).unwrap();
        let path = dir.path().join(format!("{key}.bpf"));
        std::fs::write(&path, b"not a program").unwrap();
        let program = compiled(&profile, dir.path()).unwrap();
        assert_eq!(*program, compile(&profile).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), *program, "the damaged file was not replaced");
        assert!(Arc::ptr_eq(&program, &compiled(&profile, dir.path()).unwrap()), "not served from memory");
        assert_ne!(key, cache_key(&default_profile(&["CAP_SYSLOG"])).unwrap());
    }
}
