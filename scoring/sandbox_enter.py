"""The last step before a replica's server starts, run inside its sandbox (and, without one, in front of it):

    python -I -S sandbox_enter.py [--listen-fd N] [--nproc N] [--seccomp] [--uid U --gid G] -- argv...

It moves the listening socket the supervisor made to fd 3 and tells gunicorn so the systemd way, bounds the
number of processes, becomes the sandbox user for good, installs the seccomp filter, then execs `argv`.

Standard library only, and no `site`: it runs before the virtual environment is on the path, maybe as root.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import sys

LISTEN_FD = 3  # SD_LISTEN_FDS_START: where systemd, and so gunicorn, expect an inherited listening socket

# Refused with EPERM: what a process needs to build namespaces, mounts and kernel objects of its own (the
# surface most container escapes go through), to trace, or to reach the kernel through BPF, keyrings,
# userfaultfd and io_uring. None of it is needed to serve a model.
DENIED_SYSCALLS = (
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsmount", "fspick", "fsconfig", "mount_setattr", "open_by_handle_at", "name_to_handle_at", "keyctl",
    "add_key", "request_key", "bpf", "userfaultfd", "perf_event_open", "ptrace", "process_vm_readv",
    "process_vm_writev", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "acct", "swapon", "swapoff", "reboot",
)  # fmt: skip
# clone(2) flags that make a new namespace: refused, while threads and fork (clone without them) go on.
# CLONE_NEWTIME (0x80) is left out: in clone(2)'s first argument that bit belongs to the exit signal.
CLONE_NEW_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
_PR_CAPBSET_DROP = 24
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_MASKED_EQ = 7


def _scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def load_libseccomp() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        return None


def install_seccomp(lib: ctypes.CDLL) -> None:
    """Allow everything but the calls above (and syscalls of another ABI, killed: libseccomp's default)."""
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:

        def rule(action: int, name: str, *compare: _ArgCmp) -> None:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a syscall of this architecture (or older than this libseccomp)
                return
            array = (_ArgCmp * len(compare))(*compare) if compare else None
            rc = lib.seccomp_rule_add_array(ctx, action, number, len(compare), array)
            if rc < 0:
                raise OSError(-rc, f"seccomp rule for {name}: {os.strerror(-rc)}")

        for name in DENIED_SYSCALLS:
            rule(_scmp_act_errno(errno.EPERM), name)
        for flag in CLONE_NEW_FLAGS:
            rule(_scmp_act_errno(errno.EPERM), "clone", _ArgCmp(0, _SCMP_CMP_MASKED_EQ, flag, flag))
        # clone3 passes its flags in a struct a filter cannot read: ENOSYS makes glibc fall back to clone.
        rule(_scmp_act_errno(errno.ENOSYS), "clone3")
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")
    finally:
        lib.seccomp_release(ctx)


def main(args: list[str]) -> None:
    options: dict[str, str] = {}
    while args and args[0] != "--":
        name = args.pop(0)
        options[name] = "1" if name == "--seccomp" else args.pop(0)
    argv = args[1:]
    if "--listen-fd" in options:
        fd = int(options["--listen-fd"])
        if fd != LISTEN_FD:
            os.dup2(fd, LISTEN_FD)  # dup2 leaves the new descriptor inheritable
            os.close(fd)
        os.set_inheritable(LISTEN_FD, True)
        # gunicorn takes fds 3.. as its listeners when LISTEN_PID is its own pid (exec keeps this pid), and
        # then never unlinks the socket's path on exit: the path is the supervisor's, not the server's.
        os.environ.update({"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())})
    if "--nproc" in options:
        limit = int(options["--nproc"])
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    if "--uid" in options:
        # setuid away from 0 clears every capability, and no_new_privs keeps a setuid binary from bringing
        # them back; the bounding set is emptied too (bwrap, run as root, leaves it full).
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in range(64):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
                raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP {cap}")
        os.setgroups([])
        os.setgid(int(options["--gid"]))
        os.setuid(int(options["--uid"]))
        os.umask(0o077)
    if "--seccomp" in options:
        lib = load_libseccomp()
        if lib is None:
            # The supervisor checked for it before asking; a host that lost it since refuses to start.
            sys.exit("lynx sandbox: libseccomp.so.2 is missing, the seccomp filter cannot be installed")
        install_seccomp(lib)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
