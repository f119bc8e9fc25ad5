"""A malicious deployer's score.py against the replica sandbox and the front proxy: each test asserts the
safe outcome. One supervisor serves the whole module; its entry script probes everything in init(), then
answers the proxy itself (raw HTTP on its own socket) so that it can say whatever a hostile replica would."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from django.conf import settings

from scoring import control, sandbox

from .conftest import PRIMARY_KEY, REPO, SECONDARY_KEY, wait_for
from .test_sandbox import _require_sandbox

pytestmark = pytest.mark.slow

CANARY = f"canary-{uuid.uuid4().hex}"
BIG_BODY_MIB = 256

_SCRIPT = r'''
import ctypes, glob, json, os, resource, socket, threading, urllib.parse

T = json.loads(__TARGETS__)
CANARY = T["canary"]
found = {}


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read(1 << 20)
    except OSError:
        return None


def _text(path):
    data = _read(path)
    return None if data is None else data.decode("utf-8", "replace")


def _list(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return None


def _writable(path):
    probe = os.path.join(path, ".escape-probe")
    try:
        with open(probe, "wb") as handle:
            handle.write(b"x")
        os.unlink(probe)
        return True
    except OSError:
        return False


def _connect(family, kind, address):
    try:
        with socket.socket(family, kind) as conn:
            conn.settimeout(1)
            if kind == socket.SOCK_DGRAM:
                conn.sendto(CANARY.encode(), address)
                return "sent"
            conn.connect(address)
            return "connected"
    except OSError as error:
        return None


def _status():
    fields = {}
    for line in (_text("/proc/self/status") or "").splitlines():
        name, _, value = line.partition(":")
        if name in ("Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
            fields[name] = value.strip()
    return fields


def _in_child(function):
    """Run `function` in a forked child: True when it returned True there."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if function() else 1)
        except BaseException:
            os._exit(2)
    return os.waitpid(pid, 0)[1] == 0


def _new_user_namespace():
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare(0x10000000) == 0  # CLONE_NEWUSER


def _ptrace_pid_1():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    return libc.ptrace(16, 1, None, None) == 0  # PTRACE_ATTACH


def _signal(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _settings():
    """What Django's settings hold when imported in here: the secrets, hashed."""
    try:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lynx.settings")
        import lynx.settings as s
        digest = lambda value: __import__("hashlib").sha256(str(value).encode()).hexdigest()
        return {
            "SECRET_KEY": digest(s.SECRET_KEY),
            "LYNX_ENCRYPTION_KEY": digest(s.LYNX_ENCRYPTION_KEY),
            "DATABASES": str(s.DATABASES.get("default", {}).get("NAME")),
        }
    except BaseException as error:
        return {"error": f"{type(error).__name__}: {error}"[:300]}


def probe():
    for name, path in T["read"].items():
        data = _read(path)
        found[f"read {name}"] = None if data is None else f"{len(data)} bytes"
    for name, path in T["list"].items():
        found[f"list {name}"] = _list(path)
    for name, (host, port) in T["tcp"].items():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        found[f"tcp {name}"] = _connect(family, socket.SOCK_STREAM, (host, port))
    for name, path in T["unix"].items():
        found[f"unix {name}"] = _connect(socket.AF_UNIX, socket.SOCK_STREAM, path)
    found["abstract unix"] = _connect(socket.AF_UNIX, socket.SOCK_STREAM, "\0" + T["abstract"])
    found["udp"] = _connect(socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", T["udp"]))
    found["interfaces"] = [name for _, name in socket.if_nameindex()]
    environs = {}
    for path in glob.glob("/proc/[0-9]*/environ"):
        text = _text(path)
        environs[path] = None if text is None else (CANARY in text)
    found["environ readable"] = environs
    found["cmdline of pid 1"] = (_text("/proc/1/cmdline") or "").replace("\0", " ")[:4000]
    found["visible pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    found["mountinfo"] = [line.split(" ")[4] for line in (_text("/proc/self/mountinfo") or "").splitlines()]
    found["status"] = _status()
    found["uid"] = [os.getuid(), os.geteuid(), os.getgid(), os.getgroups()]
    limits = {}
    for name in ("RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_AS", "RLIMIT_CORE"):
        limits[name] = list(resource.getrlimit(getattr(resource, name)))
    found["rlimits"] = limits
    found["new user namespace"] = _in_child(_new_user_namespace)
    found["ptrace pid 1"] = _in_child(_ptrace_pid_1)
    found["list /proc/1/root"] = _list("/proc/1/root")
    found["list /proc/1/cwd"] = _list("/proc/1/cwd")
    found["signal pid 1"] = _signal(1)
    writable = {}
    for path in T["maybe_writable"]:
        writable[path] = _writable(path)
    found["writable"] = writable
    space = {}
    for path in ("/tmp", "/dev/shm", os.getcwd()):
        try:
            st = os.statvfs(path)
            space[path] = st.f_blocks * st.f_frsize
        except OSError:
            space[path] = None
    found["writable space"] = space
    found["shm canary"] = _read(T["shm_canary"]) is not None
    found["env"] = sorted(os.environ)
    found["env holds the canary"] = CANARY in json.dumps(dict(os.environ))
    found["settings"] = _settings()
    found["cwd"] = os.getcwd()
    found["ls /"] = _list("/")
    found["ls /dev"] = _list("/dev")
    found["ls /sys"] = _list("/sys")
    found["ls /etc"] = _list("/etc")
    found["ls lynx root"] = _list(T["lynx_root"])
    found["git config readable"] = _read(os.path.join(T["lynx_root"], ".git", "config")) is not None
    found["stdout"] = os.readlink("/proc/self/fd/1")


# --- a replica that answers the proxy as it likes: raw HTTP on a socket of its own --------------------------


def _answer(conn, status, headers=(), body=b"", chunks=0):
    head = [f"HTTP/1.1 {status}"]
    head += [f"{k}: {v}" for k, v in headers]
    length = len(body) + chunks * (1 << 20)
    head += [f"Content-Length: {length}", "Connection: close", "", ""]
    conn.sendall("\r\n".join(head).encode("latin-1"))
    conn.sendall(body)
    block = b"\0" * (1 << 20)
    for _ in range(chunks):
        conn.sendall(block)


def _serve_one(conn, sock_path):
    try:
        conn.settimeout(30)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 1 << 16:
            more = conn.recv(65536)
            if not more:
                return
            data += more
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        length = int(headers.get("content-length", "0") or 0)
        while len(rest) < min(length, 1 << 20):
            more = conn.recv(65536)
            if not more:
                break
            rest += more
        url = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(url.query))
        path = url.path
        if path == "/" and method in ("GET", "HEAD"):
            _answer(conn, "200 OK", [("Content-Type", "text/plain")], b"Healthy")
        elif path == "/found":
            found["request headers"] = headers
            _answer(conn, "200 OK", [("Content-Type", "application/json")], json.dumps(found).encode())
        elif path == "/cookie":
            _answer(conn, "200 OK", [
                ("Content-Type", "application/json"),
                ("Set-Cookie", "sessionid=planted-by-a-replica; Path=/"),
                ("Set-Cookie", "csrftoken=planted-by-a-replica; Path=/"),
            ], b"{}")
        elif path == "/redirect":
            _answer(conn, "307 Temporary Redirect", [("Location", query["to"])], b"")
        elif path == "/big":
            _answer(conn, "200 OK", [("Content-Type", "application/octet-stream")], chunks=int(query["mib"]))
        elif path == "/batch":
            _answer(conn, "200 OK", [("X-Lynx-Batch-Size", query["size"])], b"{}")
        elif path == "/headers":
            many = [(f"X-Filler-{i}", "a" * int(query["len"])) for i in range(int(query["n"]))]
            _answer(conn, "200 OK", many, b"{}")
        elif path == "/swap":
            # Point the path the proxy and the health probe connect to at a socket of the host's choosing.
            link = sock_path + ".new"
            with __import__("contextlib").suppress(FileNotFoundError):
                os.unlink(link)
            os.symlink(query["to"], link)
            os.replace(link, sock_path)
            _answer(conn, "200 OK", [("Content-Type", "text/plain")], b"swapped")
        else:
            _answer(conn, "404 Not Found", [], b"")
    except Exception as error:
        found.setdefault("server errors", []).append(repr(error))
    finally:
        conn.close()


def _listening_socket():
    """The listening socket the server was given (gunicorn's worker inherits it): its descriptor."""
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            probe = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with probe:
            if probe.family == socket.AF_UNIX and probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                return int(name)
    raise RuntimeError("no listening socket")


def _take_over_the_socket():
    """Answer the proxy in place of the inference server: keep the listening socket the server was given, and
    put in its place, under the same descriptor, one nobody connects to (init() runs before gunicorn's worker
    starts accepting). Whoever binds the socket, the replica owns what arrives on it."""
    sock_path = os.path.join(os.getcwd(), "sock")  # where the socket was when the replica bound it itself
    fd = _listening_socket()
    server = socket.socket(fileno=os.dup(fd))
    server.setblocking(True)
    decoy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    decoy.bind("\0lynx-escape-decoy-%d" % os.getpid())
    decoy.listen(1)
    os.dup2(decoy.fileno(), fd)

    def accept():
        while True:
            conn, _ = server.accept()
            threading.Thread(target=_serve_one, args=(conn, sock_path), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


_started = False


def init():
    global _started
    if _started:
        return
    _started = True
    try:
        probe()
    except Exception as error:
        found["probe error"] = repr(error)
    _take_over_the_socket()


def run(raw_data):
    return found
'''


class _Listener:
    """A host service that records what reaches it: TCP (IPv4 or IPv6), UDP, abstract or path Unix sockets.
    Stream listeners answer any HTTP request 200 with `answer`."""

    def __init__(self, family: int, kind: int, address, answer: bytes = b"host-secret") -> None:
        self.sock = socket.socket(family, kind)
        self.sock.bind(address)
        if kind == socket.SOCK_STREAM:
            self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.kind = kind
        self.answer = answer
        self.got: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.kind == socket.SOCK_DGRAM:
                    data, _ = self.sock.recvfrom(65536)
                    self.got.append(data)
                    continue
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    data = conn.recv(65536)
                    self.got.append(data)
                    if data:
                        body = self.answer
                        conn.sendall(
                            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                            + str(len(body)).encode()
                            + b"\r\nConnection: close\r\n\r\n"
                            + body
                        )

    def requests_other_than_probes(self) -> list[bytes]:
        return [g for g in self.got if g and not g.startswith(b"GET / HTTP/1.1\r\nHost: replica\r\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _host_addresses() -> list[str]:
    addresses = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                addresses.append(addr.address)
    return addresses


@pytest.fixture(scope="module")
def hostile() -> Iterator[dict]:
    """One deployment laid out as the local backend lays one out, with the hostile entry script, next to
    another deployment (its key file and its replica's socket), with host services listening around it."""
    _require_sandbox()
    tag = uuid.uuid4().hex[:8]
    var = settings.VAR_DIR
    services = settings.LYNX_LOCAL_DIR / "services"
    state_dir, other = services / f"esc-{tag}", services / f"esc-other-{tag}"
    state_dir.mkdir(parents=True)
    other.mkdir(parents=True)
    (other / "run" / "0").mkdir(parents=True)
    control.write_key_file(other / "keys.json", "the-other-deployments-key", "")
    key_file = state_dir / "keys.json"
    control.write_key_file(key_file, PRIMARY_KEY, SECONDARY_KEY)
    model = var / "models" / f"esc-{tag}"
    model.mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"\0" * 64)
    script = var / "scripts" / f"esc-{tag}" / "score.py"
    script.parent.mkdir(parents=True)
    shm_canary = Path(f"/dev/shm/lynx-escape-{tag}")
    shm_canary.write_text(CANARY)
    shm_canary.chmod(0o644)
    made: list[Path] = []
    for path in (var / "secret_key", var / "encryption_key", var / "lynx.sqlite3"):
        if not path.exists():
            path.write_text(CANARY)
            path.chmod(0o600)
            made.append(path)

    listeners = {
        "tcp4": _Listener(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0)),
        "tcp_any": _Listener(socket.AF_INET, socket.SOCK_STREAM, ("0.0.0.0", 0)),
        "tcp6": _Listener(socket.AF_INET6, socket.SOCK_STREAM, ("::1", 0)),
        "udp": _Listener(socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0)),
        "abstract": _Listener(socket.AF_UNIX, socket.SOCK_STREAM, f"\0lynx-escape-{tag}"),
        # Another deployment's replica, as the proxy would reach it.
        "other replica": _Listener(
            socket.AF_UNIX,
            socket.SOCK_STREAM,
            str(other / "run" / "0" / "sock"),
            answer=b"other-model-answer",
        ),
        # An internal HTTP service on the host (a metadata endpoint, an admin API) the dashboard can reach.
        "internal http": _Listener(
            socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0), answer=f"internal-{CANARY}".encode()
        ),
    }
    targets = {
        "canary": CANARY,
        "lynx_root": str(REPO),
        "read": {
            "var/secret_key": str(var / "secret_key"),
            "var/encryption_key": str(var / "encryption_key"),
            "var/lynx.sqlite3": str(var / "lynx.sqlite3"),
            "repo var/secret_key": str(REPO / "var" / "secret_key"),
            "repo var/lynx.sqlite3": str(REPO / "var" / "lynx.sqlite3"),
            "own keys.json": str(key_file),
            "other keys.json": str(other / "keys.json"),
            "/etc/shadow": "/etc/shadow",
            "/proc/1/environ": "/proc/1/environ",
            "/dev/shm canary": str(shm_canary),
            "docker socket": "/var/run/docker.sock",
        },
        "list": {
            "/root": "/root",
            "/root/.ssh": "/root/.ssh",
            "/run": "/run",
            "/var/run": "/var/run",
            "/var/run/postgresql": "/var/run/postgresql",
            "other state dir": str(other),
            "Lynx var": str(var),
            "own state dir": str(state_dir),
            "/sys/fs/cgroup": "/sys/fs/cgroup",
            "/home": "/home",
        },
        "tcp": {
            "PostgreSQL": ["127.0.0.1", 5432],
            "Redis": ["127.0.0.1", 6379],
            "RabbitMQ": ["127.0.0.1", 5672],
            "MySQL": ["127.0.0.1", 3306],
            "host service": ["127.0.0.1", listeners["tcp4"].port],
            "Redis over ::1": ["::1", 6379],
            "host service over ::1": ["::1", listeners["tcp6"].port],
            **{f"host address {a}": [a, listeners["tcp_any"].port] for a in _host_addresses()},
        },
        "unix": {
            "PostgreSQL socket": "/var/run/postgresql/.s.PGSQL.5432",
            "MySQL socket": "/run/mysqld/mysqld.sock",
            "embedded Redis": str(settings.EMBEDDED_REDIS_SOCKET),
            "other replica": str(other / "run" / "0" / "sock"),
            "docker": "/var/run/docker.sock",
        },
        "abstract": f"lynx-escape-{tag}",
        "udp": listeners["udp"].port,
        "shm_canary": str(shm_canary),
        "maybe_writable": [
            str(REPO),
            str(REPO / "scoring"),
            sandbox.interpreter_roots()[-1].as_posix(),
            str(model),
            str(script.parent),
            str(var),
            "/tmp",
            "/dev/shm",
            "/usr/lib",
        ],
    }
    script.write_text(_SCRIPT.replace("__TARGETS__", repr(json.dumps(targets))))
    port = control.free_port()
    secrets = {"LYNX_ADMIN_PASSWORD": CANARY, "SECRET_KEY": CANARY, "AWS_SECRET_ACCESS_KEY": CANARY}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in secrets.items():
            mp.setenv(name, value)
        pid = control.spawn(
            state_dir=state_dir,
            entry_script=script,
            model_path=model,
            model_name="escape",
            model_version=1,
            port=port,
            replicas=1,
            key_file=key_file,
            max_batch_size=4,
            ready_timeout_s=60,
        )
    try:

        def ready():
            status = control.read_status(state_dir)
            if status and [r["state"] for r in status["replicas"]] == ["ready"]:
                return status
            if status and status["replicas"] and status["replicas"][0]["state"] == "dead":
                pytest.fail("the replica died:\n" + control.tail_logs(state_dir)["replica-0"])
            return None

        status = wait_for(ready, timeout=90, what="the hostile replica to be ready")
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {PRIMARY_KEY}"}
        found = wait_for(
            lambda: _json_or_none(requests.post(f"{base}/found", data=b"{}", headers=auth, timeout=10)),
            timeout=30, what="the probe's findings",
        )  # fmt: skip
        yield {
            "state_dir": state_dir,
            "other": other,
            "port": port,
            "pid": pid,
            "base": base,
            "auth": auth,
            "status": status,
            "found": found,
            "targets": targets,
            "listeners": listeners,
        }
    finally:
        control.stop(state_dir)
        for listener in listeners.values():
            listener.close()
        shm_canary.unlink(missing_ok=True)
        for path in made:
            path.unlink(missing_ok=True)
        for path in (state_dir, other, model, script.parent):
            subprocess.run(["rm", "-rf", str(path)], check=False)


def _json_or_none(response: requests.Response):
    if response.status_code != 200:
        return None
    with contextlib.suppress(ValueError):
        return response.json()
    return None


def test_findings_dump(hostile, capsys):
    """Not a check: with LYNX_ESCAPE_DUMP=1, prints everything the script saw."""
    assert hostile["found"].get("probe error") is None, hostile["found"]["probe error"]
    if not os.environ.get("LYNX_ESCAPE_DUMP"):
        return
    with capsys.disabled():
        print(json.dumps(hostile["found"], indent=1, sort_keys=True))


# ---- files and processes ---------------------------------------------------------------------------------


def test_no_lynx_secret_key_file_socket_or_host_file_is_readable(hostile):
    found = hostile["found"]
    got = {k: v for k, v in found.items() if k.startswith(("read ", "unix ")) and v is not None}
    assert got == {}, got


def test_no_host_directory_beyond_the_replicas_own_is_listable(hostile):
    found = hostile["found"]
    leading = {  # the scratch directories bwrap makes on the way to a bind (the interpreter under /root)
        f"list /{root.parts[1]}": {root.parts[2]}
        for root in sandbox.interpreter_roots()
        if len(root.parts) > 2
    }
    got = {
        k: v for k, v in found.items()
        if k.startswith("list ") and v and k not in ("list Lynx var", "list own state dir")
        and not set(v) <= leading.get(k, set())
    }  # fmt: skip
    assert got == {}, got
    assert set(found["list Lynx var"] or []) <= {"local", "models", "scripts"}
    assert set(found["list own state dir"] or []) <= {"apps", "run"}


def test_no_process_environment_reaches_the_canary(hostile):
    found = hostile["found"]
    assert not found["env holds the canary"]
    leaked = {path for path, hit in found["environ readable"].items() if hit}
    assert leaked == set(), leaked


def test_importing_django_settings_inside_gives_no_real_secret(hostile):
    got = hostile["found"]["settings"]
    real = {
        "SECRET_KEY": hashlib.sha256(str(settings.SECRET_KEY).encode()).hexdigest(),
        "LYNX_ENCRYPTION_KEY": hashlib.sha256(str(settings.LYNX_ENCRYPTION_KEY).encode()).hexdigest(),
    }
    for name, digest in real.items():
        assert got.get(name) != digest, f"{name} recovered inside the sandbox"
    canary = hashlib.sha256(CANARY.encode()).hexdigest()
    assert got.get("SECRET_KEY") != canary, "SECRET_KEY from the supervisor's environment"


def test_the_lynx_source_root_shows_only_what_entry_scripts_import(hostile):
    """Entry scripts import scoring.batching: the whole repository is bound today, .git (history, remote URLs,
    credentials a helper wrote in .git/config), the dashboard's code, deploy/ and every untracked file
    (.env.production, .env.local: only a file named exactly .env is masked)."""
    inside = {root.relative_to(REPO).parts[0] for root in sandbox.interpreter_roots() if REPO in root.parents}
    shown = set(hostile["found"]["ls lynx root"] or [])
    assert shown <= {"scoring", "var", *inside}, sorted(shown - {"scoring", "var", *inside})
    assert hostile["found"]["git config readable"] is False


def test_the_replica_is_unprivileged_and_confined_to_its_pid_namespace(hostile):
    found = hostile["found"]
    status = hostile["found"]["status"]
    assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == "0000000000000000", status
    assert status["NoNewPrivs"] == "1", status
    if os.geteuid() == 0:  # bwrap run as root leaves the bounding set full: the in-sandbox step empties it
        assert status["CapBnd"] == "0000000000000000", status
    if sandbox.seccomp_available():
        assert status["Seccomp"] == "2", status
    assert not found["ptrace pid 1"] and not found["signal pid 1"]
    (replica,) = hostile["status"]["replicas"]
    if os.geteuid() == 0:
        assert psutil.Process(replica["server_pid"]).uids().real == sandbox.SANDBOX_UID
    assert hostile["pid"] not in found["visible pids"] or found["visible pids"] == []


def test_the_replica_cannot_create_user_namespaces(hostile):
    """A new user namespace gives back every capability over the namespaces it makes (mounts, nets): the
    kernel surface most sandbox escapes go through. bwrap --disable-userns or a seccomp filter closes it."""
    assert hostile["found"]["new user namespace"] is False


def test_only_tmp_shm_and_its_own_directory_are_writable(hostile):
    writable = hostile["found"]["writable"]
    assert {path for path, ok in writable.items() if ok} <= {"/tmp", "/dev/shm"}, writable


def test_writable_space_is_bounded(hostile):
    """/tmp and /dev/shm are tmpfs (RAM, uncounted in the replica's RSS) at the kernel's default of half the
    host's memory each, and the private directory is on the host's disk: a script can fill either."""
    space = hostile["found"]["writable space"]
    half_memory = psutil.virtual_memory().total // 2
    limit = 4 * 2**30
    over = {path: size for path, size in space.items() if size is None or size >= min(limit, half_memory)}
    assert over == {}, f"writable filesystems of this size (bytes): {over}"


def test_the_replica_log_is_bounded(hostile):
    """The replica's stdout and stderr are appended to <state_dir>/logs/replica-N.log on the host's disk, with
    no RLIMIT_FSIZE and no rotation: `while True: print("x" * 10**6)` fills the disk Lynx's database is on."""
    (replica,) = hostile["status"]["replicas"]
    stdout = os.readlink(f"/proc/{replica['server_pid']}/fd/1")
    fsize = hostile["found"]["rlimits"]["RLIMIT_FSIZE"][0]
    unbounded_file = Path(stdout).is_file() and fsize == -1
    assert not unbounded_file, f"stdout is {stdout}, RLIMIT_FSIZE unlimited"


def test_the_number_of_processes_is_bounded(hostile):
    """A fork bomb (threads count too) in one replica: bounded by RLIMIT_NPROC of the shared uid, or a pids
    cgroup. Nothing is set today: the replica inherits the host's per-user default."""
    soft, _hard = hostile["found"]["rlimits"]["RLIMIT_NPROC"]
    (replica,) = hostile["status"]["replicas"]
    pids_max = "max"
    with contextlib.suppress(OSError, IndexError):
        line = Path(f"/proc/{replica['server_pid']}/cgroup").read_text().splitlines()[0]
        group = Path("/sys/fs/cgroup") / line.split("::", 1)[1].lstrip("/")
        pids_max = (group / "pids.max").read_text().strip()
    bounded = 0 <= soft <= 8192 or pids_max != "max"
    assert bounded, f"RLIMIT_NPROC {soft}, pids.max {pids_max}"


# ---- network ---------------------------------------------------------------------------------------------


def test_no_network_reaches_the_host(hostile):
    found = hostile["found"]
    got = {k: v for k, v in found.items() if k.startswith("tcp ") and v is not None}
    assert got == {}, got
    assert found["abstract unix"] is None
    time.sleep(0.5)
    assert hostile["listeners"]["udp"].got == []
    assert hostile["listeners"]["abstract"].got == []
    assert found["interfaces"] == ["lo"]


# ---- what the replica says to the proxy and the dashboard -------------------------------------------------


def test_the_key_stays_at_the_front_door(hostile):
    headers = {k.lower() for k in hostile["found"]["request headers"]}
    assert "authorization" not in headers


def test_a_replica_cannot_plant_cookies_in_the_dashboards_scoring_client(hostile):
    from deployments.services import scoring_runs as scoring

    scoring._session().cookies.clear()
    outcome = scoring._post(f"{hostile['base']}/cookie", PRIMARY_KEY, b"\x89PNG", "image/png", 10)
    assert outcome.status_code == 200
    planted = {c.name: c.value for c in scoring._session().cookies}
    scoring._session().cookies.clear()
    assert planted == {}, "the dashboard keeps a replica's cookies and sends them to every other deployment"


def test_a_replica_cannot_redirect_the_dashboard_to_a_host_service(hostile):
    """Test scoring follows the replica's 307: the dashboard (outside any sandbox) fetches any URL the replica
    names, and shows what came back to the deployer (response_excerpt)."""
    from deployments.services import scoring_runs as scoring

    internal = hostile["listeners"]["internal http"]
    to = f"http://127.0.0.1:{internal.port}/latest/meta-data/"
    outcome = scoring._post(
        f"{hostile['base']}/redirect?to={requests.utils.quote(to, safe='')}", PRIMARY_KEY, b"\x89PNG",
        "image/png", 10,
    )  # fmt: skip
    time.sleep(0.3)
    shown = CANARY in (outcome.response_excerpt or "")
    assert internal.got == [], (
        f"the dashboard fetched {to} for the replica: {internal.got[:1]}; the host service's answer is "
        f"{'in' if shown else 'not in'} the run's response_excerpt, shown to the deployer"
    )
    assert not shown


def test_a_huge_answer_is_not_buffered_whole_in_the_supervisor(hostile):
    supervisor = psutil.Process(hostile["pid"])

    def peak() -> int:
        for line in Path(f"/proc/{supervisor.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    before = peak()
    received = 0
    with contextlib.suppress(requests.RequestException), requests.post(
        f"{hostile['base']}/big?mib={BIG_BODY_MIB}", data=b"{}", headers=hostile["auth"], timeout=120,
        stream=True,
    ) as response:  # fmt: skip
        for chunk in response.iter_content(1 << 20):
            received += len(chunk)
    grown = peak() - before
    assert grown < BIG_BODY_MIB * 2**20 // 2, f"the supervisor's peak RSS grew {grown >> 20} MiB"


def test_x_lynx_batch_size_cannot_push_the_stats_past_max_batch_size(hostile):
    response = requests.post(
        f"{hostile['base']}/batch?size=1000000", data=b"{}", headers=hostile["auth"], timeout=10
    )
    assert response.status_code == 200

    def stats():
        status = control.read_status(hostile["state_dir"])
        return status if status and status["stats"]["batched_requests"] >= 1 else None

    status = wait_for(stats, timeout=10, what="the batch size in status.json")
    max_batch = status["spec"]["max_batch_size"]
    assert status["stats"]["avg_batch_size"] <= max_batch, status["stats"]
    assert (status["replicas"][0]["avg_batch_size"] or 0) <= max_batch


def test_huge_answer_headers_do_not_break_the_proxy(hostile):
    response = requests.post(
        f"{hostile['base']}/headers?n=2000&len=4000", data=b"{}", headers=hostile["auth"], timeout=30
    )
    assert response.status_code in (200, 502)
    assert requests.get(hostile["base"] + "/", timeout=5).status_code == 200


# Last: it points the replica's socket away for good.
def test_a_replica_cannot_point_the_proxy_at_another_deployments_socket(hostile):
    """The replica's socket lives in a directory it can write: it replaces the socket with a symlink, and the
    proxy and the health probe (root, on the host) follow it. Another deployment's replica answers with the
    attacker's own key; the Docker socket, if there were one, would take the proxy's method, path and body."""
    other = hostile["listeners"]["other replica"]
    target = str(hostile["other"] / "run" / "0" / "sock")
    swap = requests.post(
        f"{hostile['base']}/swap?to={requests.utils.quote(target, safe='')}", data=b"{}",
        headers=hostile["auth"], timeout=10,
    )  # fmt: skip
    assert swap.status_code == 200
    answers = []
    for _ in range(2):
        answer = requests.post(f"{hostile['base']}/score", data=b"{}", headers=hostile["auth"], timeout=10)
        answers.append(answer.text)
    # Method, path, headers and body are the attacker's: what a Docker socket would take to start a container.
    answer = requests.put(
        f"{hostile['base']}/v1.43/containers/create?name=pwn", json={"HostConfig": {"Binds": ["/:/host"]}},
        headers=hostile["auth"], timeout=10,
    )  # fmt: skip
    answers.append(answer.text)
    time.sleep(0.2)
    got = [request.split(b"\r\n", 1)[0].decode("latin-1") for request in other.requests_other_than_probes()]
    assert got == [], f"another deployment's socket got the attacker's requests {got}; it answered {answers}"
