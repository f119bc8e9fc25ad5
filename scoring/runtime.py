"""The local target's runtime: an Azure-ML-style entry script served by Microsoft's inference server.

    python -m scoring.runtime serve --entry-script score.py --model ./model --port 8890 --replicas 2 \\
        --key-file keys.json --state-dir ./state

It prints the scoring URI once listening. Ctrl-C or SIGTERM stops everything it started and exits 0.
SIGUSR1 restarts dead replicas; SIGUSR2 rolls to <state-dir>/desired.json. See scoring.supervisor.
Replicas run in a bubblewrap sandbox (scoring.sandbox); --no-sandbox runs them as this process's user instead.
Exit codes: 0 stopped, 2 bad arguments, 3 state directory in use by another supervisor, 4 port in use,
5 the sandbox cannot start here (and --no-sandbox was not given).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import sandbox, supervisor_log
from .keys import KeyFileError, Keys, KeyStore, check_key_file_private
from .replicas import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BATCH_WAIT_MS,
    LYNX_ROOT,
    Confinement,
    ReplicaSpec,
    SpecError,
    lay_out_model,
    sandbox_inputs,
)
from .state_dir import EXIT_CONFIG, EXIT_LOCKED, EXIT_NO_SANDBOX, acquire_lock, lock_holder_pid

logger = logging.getLogger("scoring.runtime")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scoring.runtime", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve an entry script and a model on a local port")
    serve.add_argument("--entry-script", required=True, type=Path, help="score.py with init() and run()")
    serve.add_argument("--model", required=True, type=Path, help="the model file or directory")
    serve.add_argument("--model-name", help="default: the basename of --model")
    serve.add_argument("--model-version", default="1")
    serve.add_argument("--port", required=True, type=int, help="the front proxy's port")
    serve.add_argument(
        "--host", default="127.0.0.1",
        help="where the front proxy listens (default %(default)s; 0.0.0.0 for other containers to reach it). "
        "Only the proxy, which checks the key, listens on TCP: replicas stay on Unix sockets",
    )  # fmt: skip
    serve.add_argument(
        "--public-host",
        help="the host name the scoring and swagger URIs give (default: --host, or 127.0.0.1 for 0.0.0.0)",
    )
    serve.add_argument("--replicas", type=int, default=1)
    keys = serve.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key", help="primary key (visible in the process list: prefer --key-file)")
    keys.add_argument(
        "--key-file", type=Path, help='JSON {"primary": ..., "secondary": ...}, mode 0600, re-read on change'
    )
    serve.add_argument("--secondary-key", help="with --key only")
    serve.add_argument("--state-dir", type=Path, help="default: a new temporary directory")
    serve.add_argument(
        "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
        help="LYNX_MAX_BATCH_SIZE for the entry script (default %(default)s; 1: one model call per request)",
    )  # fmt: skip
    serve.add_argument(
        "--max-batch-wait-ms", type=int, default=DEFAULT_MAX_BATCH_WAIT_MS,
        help="LYNX_MAX_BATCH_WAIT_MS for the entry script (default %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--ready-timeout", type=float, default=120.0, help="seconds a generation may take to be ready"
    )
    serve.add_argument(
        "--require-gpu", action="store_true",
        help="the deployment asked for a GPU: LYNX_REQUIRE_GPU=1 for the entry script",
    )  # fmt: skip
    serve.add_argument(
        "--memory-limit-mb", type=int, default=0,
        help="resident memory one replica may hold, its processes together; over it, it is killed and "
        "restarted (OOMKilled). Default 0: no limit",
    )  # fmt: skip
    serve.add_argument(
        "--no-sandbox", action="store_true",
        help="run replicas as this user, with all it can read and reach (default: a bubblewrap sandbox)",
    )  # fmt: skip
    return parser


def _confinement(args: argparse.Namespace, state_dir: Path) -> tuple[Confinement | None, dict[str, Any]]:
    """How replicas are confined, and what status.json says about it. Raises SandboxError when the sandbox
    is wanted and cannot start."""
    if args.no_sandbox:
        available = sandbox.availability()
        reason = "the supervisor was started with --no-sandbox"
        if not available.available:
            reason += f" ({available.reason})"
        note = sandbox.unsandboxed_note(sandbox.Availability(False, None, reason))
        return None, {"enabled": False, "engine": sandbox.ENGINE, "note": note, "uid": os.geteuid()}
    available = sandbox.availability()
    if not available.available:
        raise sandbox.SandboxError(f"{available.message} Or pass --no-sandbox to run replicas unsandboxed.")
    # Hidden wherever a bind would show them: Lynx's var/ (secrets, database, every deployment), this
    # deployment's state directory (its key file) and the key file wherever it is.
    hidden = [LYNX_ROOT / "var", state_dir]
    if os.environ.get("LYNX_VAR_DIR"):
        hidden.append(Path(os.environ["LYNX_VAR_DIR"]).resolve())
    if args.key_file is not None:
        hidden.append(args.key_file.expanduser().resolve())
    uid = sandbox.SANDBOX_UID if sandbox.drops_privileges() else None
    confinement = Confinement(binary=str(available.binary), hidden=tuple(hidden), uid=uid)
    status = {
        "enabled": True,
        "engine": sandbox.ENGINE,
        "uid": sandbox.sandbox_uid(),
        "network": "none",
        "note": "Replicas run in a bubblewrap sandbox: no network, no Lynx files but their own model and "
        "entry script, " + (f"as uid {uid}." if uid is not None else "as Lynx's user."),
    }
    return confinement, status


def _key_store(args: argparse.Namespace) -> KeyStore:
    if args.key_file is not None:
        if args.secondary_key:
            raise KeyFileError("--secondary-key goes with --key; put it in the key file instead")
        key_file = args.key_file.expanduser().resolve()
        try:
            check_key_file_private(key_file)
        except FileNotFoundError:
            raise KeyFileError(f"key file not found: {key_file}") from None
        return KeyStore(key_file=key_file)
    if not args.key:
        raise KeyFileError("--key must not be empty")
    return KeyStore(keys=Keys(args.key, args.secondary_key or None))


def serve(args: argparse.Namespace) -> int:
    try:
        keys = _key_store(args)
        spec = ReplicaSpec.build(
            entry_script=args.entry_script,
            model_path=args.model,
            model_name=args.model_name,
            model_version=args.model_version,
            replicas=args.replicas,
            max_batch_size=args.max_batch_size,
            max_batch_wait_ms=args.max_batch_wait_ms,
            ready_timeout_s=args.ready_timeout,
            memory_limit_mb=args.memory_limit_mb,
            require_gpu=args.require_gpu,
        )
        if not 0 < args.port < 65536:
            raise SpecError(f"--port {args.port} is not a port number")
    except (KeyFileError, SpecError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG

    if args.state_dir is None:
        state_dir = Path(tempfile.mkdtemp(prefix="lynx-serve-"))
    else:
        state_dir = args.state_dir.expanduser().resolve()
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    # Held until this process exits (the fd is close-on-exec, so replicas never inherit it).
    lock_fd = acquire_lock(state_dir)
    if lock_fd is None:
        holder = lock_holder_pid(state_dir)
        print(
            f"error: state directory {state_dir} is already served by another supervisor (pid {holder}); "
            "stop it first",
            file=sys.stderr,
        )
        return EXIT_LOCKED
    try:
        confinement, sandbox_status = _confinement(args, state_dir)
    except sandbox.SandboxError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NO_SANDBOX
    try:
        model_dir = lay_out_model(state_dir, spec)
        if confinement is not None:
            inputs = sandbox_inputs(spec, model_dir)
            sandbox.prepare_inputs(inputs, hidden=confinement.hidden, uid=confinement.uid)
    except (SpecError, OSError) as error:
        print(f"error: cannot lay out the model: {error}", file=sys.stderr)
        return EXIT_CONFIG
    logger.info("state directory %s, model %s, %s replica(s)", state_dir, model_dir, spec.replicas)
    logger.info("%s", sandbox_status["note"])
    from .supervisor import Supervisor  # aiohttp and friends: imported after the lock, so it is taken sooner

    supervisor = Supervisor(
        state_dir=state_dir,
        port=args.port,
        host=args.host,
        public_host=args.public_host,
        spec=spec,
        model_dir=model_dir,
        keys=keys,
        confinement=confinement,
        sandbox_status=sandbox_status,
    )
    return asyncio.run(supervisor.run())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.state_dir is not None:  # control.spawn() always gives one: the log goes there, rotated
        supervisor_log.configure(args.state_dir.expanduser().resolve())
    else:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
