//! The RuntimeDefault seccomp profile: the same syscall allowlist as Docker's and containerd's
//! default profile. Everything not listed fails with EPERM; some syscalls are allowed only when
//! the container holds the capability that makes them meaningful (e.g. `mount` with
//! CAP_SYS_ADMIN), or only on the architectures that have them.

use super::seccomp::{ArchMap, Arg, Profile, Rule};
use oci_spec::runtime::{Arch, LinuxSeccompAction, LinuxSeccompOperator};
use std::sync::OnceLock;

/// Syscalls every container may use.
const ALLOWED: &[&str] = &[
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
];

/// Syscalls allowed only with CAP_SYS_ADMIN (namespaces, mounts, hostname...).
const SYS_ADMIN: &[&str] = &[
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
];

/// The `clone` flags that create namespaces (CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC |
/// NEWUSER | NEWPID | NEWNET): without CAP_SYS_ADMIN, `clone` is allowed only without them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `personality(2)` values programs legitimately use: PER_LINUX, PER_LINUX32,
/// UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (query).
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `socket(2)` domain that stays blocked: AF_VSOCK.
const AF_VSOCK: u64 = 40;

/// ENOSYS, so libc falls back from `clone3` to `clone` (which is then filtered by flags).
const ENOSYS: u32 = 38;

/// The profile, built once.
pub(super) fn profile() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(build)
}

fn build() -> Profile {
    let mut rules = vec![
        allow(ALLOWED),
        // Namespaced since Linux 4.8; before that they could escape the container.
        allow(&["process_vm_readv", "process_vm_writev", "ptrace"]).min_kernel("4.8"),
        allow(&["socket"]).arg(0, AF_VSOCK, LinuxSeccompOperator::ScmpCmpNe),
    ];
    for value in PERSONALITIES {
        rules.push(allow(&["personality"]).arg(0, value, LinuxSeccompOperator::ScmpCmpEq));
    }
    rules.extend([
        allow(&["sync_file_range2", "swapcontext"]).arches(&["ppc64le"]),
        allow(&[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ])
        .arches(&["arm", "arm64"]),
        allow(&["arch_prctl"]).arches(&["amd64", "x32"]),
        allow(&["modify_ldt"]).arches(&["amd64", "x32", "x86"]),
        allow(&[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ])
        .arches(&["s390", "s390x"]),
        allow(&["riscv_flush_icache"]).arches(&["riscv64"]),
        allow(&["open_by_handle_at"]).caps(&["CAP_DAC_READ_SEARCH"]),
        allow(SYS_ADMIN).caps(&["CAP_SYS_ADMIN"]),
        // Without CAP_SYS_ADMIN: threads and processes yes, new namespaces no.
        allow(&["clone"])
            .masked_arg(0, CLONE_NAMESPACE_FLAGS)
            .unless_caps(&["CAP_SYS_ADMIN"])
            .unless_arches(&["s390", "s390x"]),
        // s390 swaps the first two clone arguments.
        allow(&["clone"])
            .masked_arg(1, CLONE_NAMESPACE_FLAGS)
            .arches(&["s390", "s390x"])
            .unless_caps(&["CAP_SYS_ADMIN"]),
        // clone3 passes its flags in memory, where seccomp cannot look.
        Rule {
            errno_ret: Some(ENOSYS),
            ..rule(&["clone3"], LinuxSeccompAction::ScmpActErrno)
        }
        .unless_caps(&["CAP_SYS_ADMIN"]),
        allow(&["reboot"]).caps(&["CAP_SYS_BOOT"]),
        allow(&["chroot"]).caps(&["CAP_SYS_CHROOT"]),
        allow(&["delete_module", "init_module", "finit_module"]).caps(&["CAP_SYS_MODULE"]),
        allow(&["acct"]).caps(&["CAP_SYS_PACCT"]),
        allow(&[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ])
        .caps(&["CAP_SYS_PTRACE"]),
        allow(&["iopl", "ioperm"]).caps(&["CAP_SYS_RAWIO"]),
        allow(&["settimeofday", "stime", "clock_settime", "clock_settime64"])
            .caps(&["CAP_SYS_TIME"]),
        allow(&["vhangup"]).caps(&["CAP_SYS_TTY_CONFIG"]),
        allow(&[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ])
        .caps(&["CAP_SYS_NICE"]),
        allow(&["syslog"]).caps(&["CAP_SYSLOG"]),
        allow(&["bpf"]).caps(&["CAP_BPF"]),
        allow(&["perf_event_open"]).caps(&["CAP_PERFMON"]),
    ]);

    Profile {
        default_action: LinuxSeccompAction::ScmpActErrno,
        default_errno_ret: Some(1), // EPERM
        arch_map: vec![
            arch_map(
                Arch::ScmpArchX86_64,
                &[Arch::ScmpArchX86, Arch::ScmpArchX32],
            ),
            arch_map(Arch::ScmpArchAarch64, &[Arch::ScmpArchArm]),
            arch_map(Arch::ScmpArchRiscv64, &[]),
            arch_map(Arch::ScmpArchS390x, &[Arch::ScmpArchS390]),
            arch_map(Arch::ScmpArchPpc64le, &[]),
        ],
        architectures: Vec::new(),
        flags: Vec::new(),
        syscalls: rules,
    }
}

fn arch_map(architecture: Arch, sub: &[Arch]) -> ArchMap {
    ArchMap {
        architecture,
        sub_architectures: Some(sub.to_vec()),
    }
}

fn rule(names: &[&str], action: LinuxSeccompAction) -> Rule {
    Rule {
        names: names.iter().map(|n| n.to_string()).collect(),
        action,
        ..Rule::default()
    }
}

fn allow(names: &[&str]) -> Rule {
    rule(names, LinuxSeccompAction::ScmpActAllow)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Small builders so the rule table above reads like the profile it is.
impl Rule {
    fn caps(mut self, caps: &[&str]) -> Self {
        self.includes.caps = strings(caps);
        self
    }

    fn unless_caps(mut self, caps: &[&str]) -> Self {
        self.excludes.caps = strings(caps);
        self
    }

    fn arches(mut self, arches: &[&str]) -> Self {
        self.includes.arches = strings(arches);
        self
    }

    fn unless_arches(mut self, arches: &[&str]) -> Self {
        self.excludes.arches = strings(arches);
        self
    }

    fn min_kernel(mut self, version: &str) -> Self {
        self.includes.min_kernel = Some(version.to_string());
        self
    }

    fn arg(mut self, index: usize, value: u64, op: LinuxSeccompOperator) -> Self {
        self.args.push(Arg {
            index,
            value,
            value_two: None,
            op,
        });
        self
    }

    /// `(arg & mask) == 0`. In the OCI format (runc's reading) `value` is the mask and
    /// `valueTwo` the expected result.
    fn masked_arg(mut self, index: usize, mask: u64) -> Self {
        self.args.push(Arg {
            index,
            value: mask,
            value_two: Some(0),
            op: LinuxSeccompOperator::ScmpCmpMaskedEq,
        });
        self
    }
}
