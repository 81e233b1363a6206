//! Docker's default seccomp profile (moby `profiles/seccomp/default.json`) as a table, and its
//! resolution into an OCI `linux.seccomp` for the capabilities a step gets and the host's
//! architecture, the way moby's `setupSeccomp` does it.
//!
//! The table keeps moby's rule order and conditions (`includes`/`excludes` on capabilities and
//! architectures). moby's one `minKernel: 4.8` condition (ptrace and process_vm_*) is always met:
//! the sandbox needs a newer kernel anyway.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscallBuilder,
};

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

#[cfg(test)]
mod tests {
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
}
