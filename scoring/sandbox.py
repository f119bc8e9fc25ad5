"""The replica sandbox: each inference server runs inside bubblewrap (`bwrap`), because an entry script is
code its deployer wrote and Lynx runs.

Inside, a replica sees the interpreter, its packages and Lynx's `scoring` package read-only, its model,
entry script and app root read-only, a private /tmp and /dev/shm, and one small writable directory of its own
(its working directory), all three sized tmpfs. It does not see Lynx's var/ (a tmpfs covers it), its own key
file, other deployments, the host's processes (own PID namespace) or any network (own network namespace).
The front proxy reaches it over a Unix socket that the supervisor binds in a directory of its own, out of
the replica's reach, and hands in already listening (`listen_fd`). Before the server starts, the in-sandbox
step (scoring/sandbox_enter.py) bounds the replica's processes, drops to an unprivileged uid when Lynx runs
as root, and installs a seccomp filter (no new namespaces, mounts, BPF, keyrings, ptrace, io_uring).

Standard library only: `scoring.control` and the local backend probe availability with it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ENGINE = "bubblewrap"
BWRAP_ENV = "LYNX_BWRAP"  # the bwrap binary to use; default: `bwrap` on PATH
SANDBOX_UID = 65534  # nobody: what replicas run as when Lynx runs as root
SANDBOX_GID = 65534
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap; "
    "Arch: pacman -S bubblewrap) and allow user namespaces (sysctl kernel.unprivileged_userns_clone=1; "
    "on Ubuntu 24.04 also kernel.apparmor_restrict_unprivileged_userns=0); macOS and Windows have no sandbox"
)
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "passwd", "group", "nsswitch.conf",
    "hosts", "ssl", "ca-certificates", "ca-certificates.conf", "pki", "alternatives", "mime.types",
    "os-release",
)  # fmt: skip
# What a replica's environment may hold, besides what scoring.replicas sets: the rest of the supervisor's
# environment (a Celery worker's, with Django's secrets and the broker's URL) stays outside.
_KEEP = frozenset(
    {"LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH", "GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "SERVICE_NAME"}
)
# TensorFlow's own TF_ prefixes only: Terraform's TF_CLI_*, TF_VAR_* and TF_TOKEN_* share the prefix.
_TENSORFLOW = ("TF_CPP_", "TF_ENABLE_", "TF_FORCE_", "TF_GPU_", "TF_NUM_", "TF_XLA_", "TF_USE_", "TF_CUDNN_")
_KEEP_PREFIXES: tuple[str, ...] = (
    "LC_",
    *_TENSORFLOW,
    "TF_DETERMINISTIC_OPS",
    "CUDA_",
    "NVIDIA_",
    "OMP_",
    "MKL_",
    "KMP_",
    "XLA_",
)
_KEEP_PREFIXES += ("AZUREML_", "AML_")
_KEEP_PREFIXES += ("LYNX_MAX_BATCH", "PYTHON")
# The in-sandbox step: runs as root inside the sandbox (when Lynx does), then execs the server as the sandbox
# user. Inside, only Lynx's scoring/ is bound, so it must live there.
ENTER_SCRIPT = Path(__file__).with_name("sandbox_enter.py")
# Sized tmpfs, in RAM and not counted in the replica's RSS (nor its memory limit): bounded, so that a script
# cannot fill half the host's memory through /tmp or /dev/shm. Room for the temporary files a model library
# writes; /dev/shm is where multiprocessing and PyTorch's DataLoader share tensors.
TMP_BYTES = 256 * 2**20
SHM_BYTES = 256 * 2**20
PRIVATE_DIR_BYTES = 64 * 2**20  # the replica's working directory: nothing of Lynx's needs to be there
_MASK_BYTES = 2**20  # the tmpfs that hides var/ and the state directory: it holds only empty directories
# Processes (threads count) of the sandbox user: the uid is shared by every replica on the host, so one
# replica's fork bomb can starve the others, but not the host. TensorFlow starts about two threads per core
# per pool, and a replica has max_batch_size + 4 server threads: generous for several large replicas.
NPROC_LIMIT = 8192
LIBSECCOMP = "libseccomp.so.2"


class SandboxError(OSError):
    """The sandbox cannot hold this replica (unavailable, or a file it needs is out of its reach)."""


@dataclass(frozen=True)
class Availability:
    available: bool
    binary: str | None
    reason: str = ""  # why not, when not
    seccomp: bool = False  # libseccomp is here: replicas get the seccomp filter

    @property
    def message(self) -> str:
        if self.available:
            filtered = "" if self.seccomp else f", without a seccomp filter ({LIBSECCOMP} is missing)"
            if self.binary and not sizes_tmpfs(self.binary):
                filtered += ", with /tmp and /dev/shm unbounded (this bwrap is older than 0.7.0: no --size)"
            return f"replicas run in a {ENGINE} sandbox ({self.binary}){filtered}"
        return f"the {ENGINE} sandbox cannot start: {self.reason}. To sandbox replicas, {INSTALL_HINT}."


def unsandboxed_note(available: Availability) -> str:
    """What the banner and the deployment page say when replicas run without the sandbox."""
    return (
        "Replicas run without a sandbox: an entry script can read what Lynx can read (its secrets, its "
        f"database) and reach the network. Why: {available.reason}. To sandbox them, {INSTALL_HINT}."
    )


def bwrap_binary() -> str | None:
    configured = os.environ.get(BWRAP_ENV)
    if configured:
        return configured
    # /usr/bin too: a worker started with a bare PATH must find Debian's bwrap.
    return shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin:/bin")


def availability() -> Availability:
    """Whether replicas can be sandboxed here: bwrap runs `true` with the namespaces replicas get. Probed once
    per binary and cached. Without libseccomp, replicas run without the seccomp filter (and `message` says
    so), except in production (LYNX_ENV=production), where the filter is part of the sandbox."""
    found = _probe(bwrap_binary())
    if not found.available:
        return found
    seccomp = seccomp_available()
    if not seccomp and os.environ.get("LYNX_ENV") == "production":
        return Availability(
            False, found.binary, f"{LIBSECCOMP} is not installed (apt-get install libseccomp2)"
        )
    return Availability(True, found.binary, seccomp=seccomp)


@functools.lru_cache(maxsize=8)
def sizes_tmpfs(binary: str) -> bool:
    """Whether this bwrap takes --size for a tmpfs (0.7.0 and later; Ubuntu 22.04 has 0.6.1)."""
    try:
        done = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--size" in done.stdout + done.stderr


@functools.lru_cache(maxsize=1)
def seccomp_available() -> bool:
    try:
        ctypes.CDLL(LIBSECCOMP)
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=8)
def _probe(binary: str | None) -> Availability:
    if not sys.platform.startswith("linux"):
        return Availability(False, None, f"{ENGINE} needs Linux, and this is {sys.platform}")
    if not binary or not os.path.exists(binary):
        return Availability(False, None, f"{binary or 'bwrap'} is not installed")
    command = [binary, *_namespace_flags(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    try:
        done = subprocess.run(
            [*command, "true"], env={}, capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError) as error:
        return Availability(False, binary, f"{binary} does not run ({error})")
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        return Availability(
            False, binary, f"{binary} fails: {said[-1] if said else f'exit {done.returncode}'}"
        )
    return Availability(True, binary)


def _namespace_flags() -> list[str]:
    flags = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if os.geteuid() != 0:  # an unprivileged bwrap needs a user namespace for everything else
        flags.insert(0, "--unshare-user")
    return flags + ["--die-with-parent", "--new-session"]


def drops_privileges() -> bool:
    """True when replicas change uid in the sandbox: Lynx runs as root."""
    return os.geteuid() == 0


def sandbox_uid() -> int:
    return SANDBOX_UID if drops_privileges() else os.geteuid()


def environment(env: dict[str, str], *, home: str = "/tmp") -> dict[str, str]:
    """The replica's environment inside the sandbox: what the inference server needs, and nothing else."""
    kept = {name: value for name, value in env.items() if name in _KEEP or name.startswith(_KEEP_PREFIXES)}
    kept.update(
        {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": home,
            "TMPDIR": "/tmp",
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",  # everything it imports is read-only
        }
    )
    return kept


def interpreter_roots() -> list[Path]:
    """The interpreter, the standard library and the virtual environment's packages."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.add(str(Path(os.path.realpath(sys.executable)).parent.parent))
    return sorted({Path(os.path.realpath(p)) for p in roots if p})


class _Layout:
    """bwrap arguments for a tree built from binds, each at its host path, with the directories leading to a
    bind made 0755 (bwrap would make them 0700, which an unprivileged uid could not cross)."""

    def __init__(self, *, sized: bool = True) -> None:
        self.sized = sized  # bwrap takes --size (0.7.0 and later)
        self.args: list[str] = []
        self._mounts: list[tuple[Path, str]] = []  # (path, "host" | "scratch") in mount order
        self.masks: list[Path] = []  # masking tmpfs: made read-only once every bind below them is in place

    def _covering(self, path: Path) -> tuple[Path, str] | None:
        best = None
        for mount, kind in self._mounts:
            if path == mount or mount in path.parents:
                if best is None or len(mount.parts) >= len(best[0].parts):
                    best = (mount, kind)
        return best

    def visible(self, path: Path) -> bool:
        covering = self._covering(path)
        return covering is not None and covering[1] == "host"

    def _parents(self, path: Path) -> None:
        for parent in reversed(path.parents):
            if parent == Path("/"):
                continue
            covering = self._covering(parent)
            if covering and (covering[0] == parent or covering[1] == "host"):
                continue  # a mount point, or a directory of a host tree: already there
            self.args += ["--perms", "0755", "--dir", str(parent)]
            self._mounts.append((parent, "scratch"))

    def bind(self, path: Path, *, writable: bool = False, try_: bool = False) -> None:
        if try_ and not os.path.exists(path):
            return
        self._parents(path)
        if path.is_symlink() and str(path) in _SYSTEM_DIRS:  # /lib -> usr/lib on a merged /usr
            self.args += ["--symlink", os.readlink(path), str(path)]
            return
        flag = "--bind" if writable else "--ro-bind"
        self.args += [flag, str(path), str(path)]
        self._mounts.append((path, "host"))

    def dev_bind(self, path: Path) -> None:
        self._parents(path)
        self.args += ["--dev-bind", str(path), str(path)]
        self._mounts.append((path, "host"))

    def tmpfs(self, path: Path, mode: str = "0755", *, size: int) -> None:
        self._parents(path)
        self.args += ["--perms", mode, *(["--size", str(size)] if self.sized else []), "--tmpfs", str(path)]
        self._mounts.append((path, "scratch"))

    def mask(self, path: Path) -> None:
        """Hide a host path that an earlier bind made visible: an empty tmpfs, or /dev/null for a file."""
        if not self.visible(path) or not os.path.lexists(path):
            return
        if path.is_dir() and not path.is_symlink():
            self.tmpfs(path, size=_MASK_BYTES)  # 0755: binds below it must stay reachable
            self.masks.append(path)
        else:
            self.args += ["--ro-bind", "/dev/null", str(path)]


@dataclass(frozen=True)
class Plan:
    """What one replica's sandbox holds."""

    lynx_root: Path  # its scoring/ only, read-only: entry scripts import scoring.batching
    hidden: Sequence[Path]  # Lynx's var/, the state directory, the key file: masked wherever they show
    read_only: Sequence[Path]  # model, entry script directory, app root
    private_dir: Path  # the working directory: a small tmpfs at this path, the replica's own
    uid: int | None  # drop to this uid (and SANDBOX_GID) inside; None: stay who we are
    listen_fd: int | None = None  # the listening socket the supervisor made, passed in (Popen pass_fds)
    seccomp: bool = True  # install the seccomp filter (libseccomp is here)


def command(binary: str, plan: Plan, argv: Sequence[str]) -> list[str]:
    """The command line that runs `argv` inside the sandbox. Start it with the replica's environment as
    bwrap's whole environment (bwrap stays as pid 1 inside, and its /proc/1/environ is visible there)."""
    layout = _Layout(sized=sizes_tmpfs(binary))
    for name in _SYSTEM_DIRS:
        layout.bind(Path(name), try_=True)
    for name in _ETC:
        layout.bind(Path("/etc") / name, try_=True)
    layout.args += ["--dev", "/dev", "--proc", "/proc"]
    layout._mounts += [(Path("/dev"), "scratch"), (Path("/proc"), "scratch")]
    layout.tmpfs(Path("/dev/shm"), "01777", size=SHM_BYTES)
    layout.tmpfs(Path("/tmp"), "01777", size=TMP_BYTES)
    layout.bind(Path("/sys/devices/system/cpu"), try_=True)  # CPU counts, for the thread pools
    nvidia = sorted(Path("/dev").glob("nvidia*"))
    if nvidia:
        # A GPU host: its device nodes, and the parts of /sys the driver and CUDA read (the PCI devices, their
        # classes and the nvidia modules' parameters), not all of it (cgroups, kernel, firmware). Not tested
        # on a GPU host yet: if CUDA finds no device in a sandboxed replica, this list is the first suspect.
        for node in nvidia:
            layout.dev_bind(node)
        for name in ("devices", "bus", "class", "module", "dev"):
            layout.bind(Path("/sys") / name, try_=True)
    # Entry scripts import scoring.batching: only that package of Lynx's source is bound, never the rest of
    # the repository (.git, the dashboard, deploy/, untracked .env.* files).
    for root in _outermost([plan.lynx_root / "scoring", *interpreter_roots()]):
        if not layout.visible(root):
            layout.bind(root)
    for secret in _outermost([Path(p) for p in plan.hidden]):
        layout.mask(secret)
    env_file = plan.lynx_root / ".env"
    if layout.visible(env_file):
        layout.mask(env_file)
    for path in plan.read_only:
        layout.bind(Path(path))
    for secret in plan.hidden:  # a key file kept beside score.py came back with its folder
        if not Path(secret).is_dir():
            layout.mask(Path(secret))
    # A tmpfs, not a host directory: bounded, and nothing the supervisor opens lives in it. (The replica's
    # socket used to be here, and a replica swapped it for a symlink the root proxy followed.)
    layout.tmpfs(plan.private_dir, "01777", size=PRIVATE_DIR_BYTES)
    # Read-only once built: the masks, and the root (bwrap's own tmpfs, holding the directories made on the
    # way to each bind, which an unprivileged bwrap leaves writable by the replica's uid).
    for mask in [*layout.masks, Path("/")]:
        layout.args += ["--remount-ro", str(mask)]
    # No capability but the three the in-sandbox step needs to empty the bounding set and drop to the sandbox
    # user (moot once it has: no_new_privs, and setuid away from 0 clears the rest).
    layout.args += ["--cap-drop", "ALL"]
    if plan.uid is not None:
        layout.args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    layout.args += ["--chdir", str(plan.private_dir), "--hostname", "replica"]
    return [
        binary,
        *_namespace_flags(),
        *layout.args,
        "--",
        *enter_command(argv, listen_fd=plan.listen_fd, plan=plan),
    ]


def enter_command(argv: Sequence[str], *, listen_fd: int | None, plan: Plan | None = None) -> list[str]:
    """`argv` behind the in-sandbox step (scoring/sandbox_enter.py), which hands it the listening socket
    `listen_fd`; and, sandboxed (`plan`), bounds its processes, drops privileges and installs the filter."""
    options: list[str] = []
    if listen_fd is not None:
        options += ["--listen-fd", str(listen_fd)]
    if plan is not None:
        options += ["--nproc", str(NPROC_LIMIT)]
        if plan.uid is not None:
            options += ["--uid", str(plan.uid), "--gid", str(SANDBOX_GID)]
        if plan.seccomp:
            options += ["--seccomp"]
    return [sys.executable, "-I", "-S", str(ENTER_SCRIPT), *options, "--", *argv]


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """Resolved, deduplicated, and without those inside another (outer ones first)."""
    kept: list[Path] = []
    for path in sorted({Path(os.path.realpath(p)) for p in paths}, key=lambda p: len(p.parts)):
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    return kept


def _readable_by(info: os.stat_result, uid: int, gid: int, *, directory: bool) -> bool:
    return _permits(info, uid, gid, 0o5 if directory else 0o4)


def _permits(info: os.stat_result, uid: int, gid: int, need: int) -> bool:
    if info.st_uid == uid:
        return (info.st_mode >> 6) & need == need
    if info.st_gid == gid:
        return (info.st_mode >> 3) & need == need
    return info.st_mode & need == need


def _shielded(path: Path, uid: int, gid: int) -> bool:
    """True when some directory above `path` already keeps `uid` out on the host (var/ is 0700): opening
    `path` up to it inside the sandbox then opens it to nobody outside."""
    for parent in path.parents:
        try:
            info = parent.stat()
        except OSError:
            return False
        if not _permits(info, uid, gid, 0o1):  # no search permission: nothing below can be reached
            return True
    return False


def prepare_inputs(paths: Sequence[Path], *, hidden: Iterable[Path], uid: int | None) -> None:
    """Check and open up what a replica reads (model, entry-script folder, app root) before it starts.

    None of them may hold a hidden directory: a script kept at the top of var/ would bind all of var/ back in.
    (A hidden file, such as a key file beside score.py, is masked again after the binds.)
    """
    for path in paths:
        for secret in hidden:
            if Path(secret).is_dir() and (Path(path) == secret or Path(path) in Path(secret).parents):
                raise SandboxError(
                    f"{path} holds {secret}, which replicas must not see: keep entry scripts and models in "
                    "folders of their own"
                )
    if uid is not None:
        grant_read(paths, uid, SANDBOX_GID)


def grant_read(
    paths: Iterable[Path], uid: int = SANDBOX_UID, gid: int = SANDBOX_GID, limit: int = 20000
) -> None:
    """Make the files a replica reads (model, entry script directory, app root) readable by the sandbox
    user. Lynx writes with umask 077, so they are 0600 inside its 0700 var/: adding o+r there changes nothing
    for the host's other users. Anywhere not so shielded, refuse and say what to change instead."""
    seen = 0
    for top in paths:
        top = Path(top)
        walk = [top]
        while walk:
            path = walk.pop()
            seen += 1
            if seen > limit:
                return
            try:
                if path.is_symlink():  # an app root's link to the model: the model is granted on its own
                    continue
                if path.name == "__pycache__":  # a cache Python skips when it cannot read it
                    continue
                info = path.stat()
            except FileNotFoundError:
                continue
            directory = stat.S_ISDIR(info.st_mode)
            if directory:
                try:
                    walk.extend(path.iterdir())
                except PermissionError:
                    pass
            if _readable_by(info, uid, gid, directory=directory):
                continue
            # Root may open up another user's file too: in production the worker runs as root (so replicas can
            # drop to `uid`) while the web process, as Lynx's user, stored the model (docker-compose.yml).
            if (info.st_uid != os.geteuid() and os.geteuid() != 0) or not _shielded(path, uid, gid):
                raise SandboxError(
                    f"{path} is not readable by the sandbox's user (uid {uid}): a replica could not load it. "
                    f"Make it readable by others (chmod -R o+rX {top}), or keep it inside Lynx's var/."
                )
            os.chmod(path, stat.S_IMODE(info.st_mode) | (0o005 if directory else 0o004))


def prepare_socket_dir(path: Path) -> None:
    """The directory of a replica's socket: the supervisor's own, 0700, never bound into a sandbox. Made
    afresh: an older Lynx gave this directory to the sandbox user, so what is in it may be the replica's
    (a symlink to another socket)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)  # removes links, never follows them
    path.mkdir(mode=0o700)
