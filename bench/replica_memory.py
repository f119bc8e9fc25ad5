"""Resident memory of one replica of the demo model: the gunicorn arbiter and its worker, summed (RSS), right
after the replica is ready and again after load (by default 640 requests of a small PNG at concurrency 32).

    .venv/bin/python -m bench.replica_memory [--rounds 2] [--env MALLOC_ARENA_MAX=8] [--keep-var]

It starts a real local deployment (control.spawn: supervisor, front proxy, 1 replica of
scoring/entry_scripts/score_tf2.py) under $LYNX_VAR_DIR (default var/memprobe), and stops it afterwards, also
on errors and Ctrl-C. `--env NAME=VALUE` adds to the supervisor's environment, so to the replica's unless
scoring.replicas.replica_environment drops or overrides it: for trying a setting before making it the default.
`--env NAME=` removes NAME from it. `--env TF_USE_LEGACY_KERAS=0 --env MALLOC_ARENA_MAX=16` (glibc's own
limit on 2 cores) gives back the replica as it was before both memory settings. Memory is exact; the
throughput printed is only indicative on a busy machine.

The file-backed part (TensorFlow's shared libraries, ~375 MB of the worker) depends on how the page cache
got those files: right after `pip install` wrote them it measured ~125 MB more than once they had been evicted
and read back through mmap, with the same code. Compare runs made in the same state.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import requests

from scoring import control

REPO = Path(__file__).resolve().parent.parent
ENTRY_SCRIPT = REPO / "scoring" / "entry_scripts" / "score_tf2.py"
MODEL_CACHE = REPO / "var" / "cache" / "demo-model"  # shared with the tests' demo_model_dir fixture
KEY = "replica-memory-bench-key"


def demo_model() -> Path:
    """The demo model, built once per version of its recipe (in a subprocess: no TensorFlow here)."""
    from scoring.demo_model import build_cached

    return build_cached(MODEL_CACHE, quiet=True)


def digit_png() -> bytes:
    """A held-out digit drawn as a 64x64 greyscale PNG (~300 bytes), as the demo's clients send it."""
    from sklearn.datasets import load_digits

    from scoring.demo_model import render_digit

    return render_digit(load_digits().images[-1], fmt="PNG")


def _kib(pid: int, field: str) -> int:
    """A field of /proc/<pid>/smaps_rollup in KiB (0 when unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(state_dir: Path) -> dict:
    """RSS of the replica's arbiter and workers, read from the kernel now (not status.json's last write)."""
    status = control.read_status(state_dir) or {}
    replica = (status.get("replicas") or [{}])[0]
    # The gunicorn arbiter (inside the sandbox: "pid" is then the bwrap process around it).
    arbiter = psutil.Process(replica.get("server_pid") or replica["pid"])
    workers = arbiter.children(recursive=True)
    sample = {
        "arbiter_mb": arbiter.memory_info().rss / 2**20,
        "worker_mb": sum(w.memory_info().rss for w in workers) / 2**20,
        # Where the worker's resident memory is: anonymous (heaps, arenas) against file-backed (libraries).
        "worker_anon_mb": sum(_kib(w.pid, "Anonymous") for w in workers) / 1024,
        "worker_threads": sum(w.num_threads() for w in workers),
    }
    sample["worker_file_mb"] = sample["worker_mb"] - sample["worker_anon_mb"]
    sample["total_mb"] = sample["arbiter_mb"] + sample["worker_mb"]
    return sample


def samples_pids(state_dir: Path) -> str:
    replica = ((control.read_status(state_dir) or {}).get("replicas") or [{}])[0]
    return f"{replica.get('server_pid') or replica.get('pid')}, workers {replica.get('worker_pids')}"


def cpu_seconds(state_dir: Path) -> float:
    """CPU time (user + system) of the replica's arbiter and workers so far."""
    status = control.read_status(state_dir) or {}
    replica = (status.get("replicas") or [{}])[0]
    arbiter = psutil.Process(replica.get("server_pid") or replica["pid"])
    return sum(sum(p.cpu_times()[:2]) for p in [arbiter, *arbiter.children(recursive=True)])


def show(label: str, sample: dict) -> None:
    print(
        f"{label:<22} arbiter+worker {sample['total_mb']:7.1f} MB  (arbiter {sample['arbiter_mb']:5.1f}, "
        f"worker {sample['worker_mb']:6.1f}: anon {sample['worker_anon_mb']:6.1f}, file "
        f"{sample['worker_file_mb']:6.1f}; {sample['worker_threads']} threads)",
        flush=True,
    )


def load(url: str, body: bytes, *, requests_total: int, concurrency: int) -> dict:
    """Send `requests_total` requests from `concurrency` closed-loop clients; the answers' top classes."""
    counter = iter(range(requests_total))
    lock = threading.Lock()
    answers: dict[str, int] = {}
    errors: list[str] = []
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/octet-stream"}

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                try:
                    response = session.post(url, data=body, headers=headers, timeout=120)
                except requests.RequestException as error:
                    with lock:
                        errors.append(repr(error))
                    continue
                with lock:
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:200]}")
                        continue
                    best = response.json()["predictions"][0]
                    answer = f"{best['label']} {best['probability']}"
                    answers[answer] = answers.get(answer, 0) + 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "answers": answers, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.replica_memory", description=description)
    parser.add_argument("--requests", type=int, default=640, help="requests per round (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=32, help="clients at once (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="load rounds, RSS after each (default 1)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="see above")
    parser.add_argument("--json", type=Path, help="also write the samples here")
    parser.add_argument("--keep-var", action="store_true", help="keep the state directory (logs) afterwards")
    parser.add_argument(
        "--hold", type=float, default=0.0, help="seconds to keep serving at the end (to inspect)"
    )
    args = parser.parse_args(argv)

    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--env {item!r}: expected NAME=VALUE")
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)

    var_dir = Path(os.environ.get("LYNX_VAR_DIR", REPO / "var" / "memprobe")).resolve()
    root = var_dir / f"replica-memory-{os.getpid()}"
    state_dir = root / "state"
    model = demo_model()
    body = digit_png()

    # Ctrl-C and SIGTERM both unwind through the finally below, which stops what was started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root.mkdir(parents=True, exist_ok=True)
    samples: dict = {"env": args.env}
    try:
        key_file = root / "keys.json"
        control.write_key_file(key_file, KEY, KEY + "-secondary")
        port = control.free_port()
        began = time.monotonic()
        pid = control.spawn(
            state_dir=state_dir,
            entry_script=ENTRY_SCRIPT,
            model_path=model,
            model_name="digits",
            model_version=1,
            port=port,
            replicas=1,
            key_file=key_file,
        )
        while True:
            status = control.read_status(state_dir)
            if status is None and not psutil.pid_exists(pid):
                raise RuntimeError(f"the supervisor exited:\n{control.tail_logs(state_dir)['supervisor']}")
            replicas = (status or {}).get("replicas", [])
            if any(r["state"] == "dead" for r in replicas):
                logs = json.dumps(control.tail_logs(state_dir, 30), indent=1)
                raise RuntimeError(f"the replica died:\n{logs}")
            if replicas and all(r["state"] == "ready" for r in replicas):
                break
            if time.monotonic() - began > 180:
                raise TimeoutError("the replica was not ready after 180 s")
            time.sleep(0.1)
        print(f"ready after {time.monotonic() - began:.1f} s; extra env: {args.env or 'none'}", flush=True)
        time.sleep(1.0)
        samples["after_start"] = measure(state_dir)
        show("after start", samples["after_start"])

        url = f"http://127.0.0.1:{port}/score"
        samples["rounds"] = []
        for index in range(args.rounds):
            cpu_before = cpu_seconds(state_dir)
            result = load(url, body, requests_total=args.requests, concurrency=args.concurrency)
            cpu_ms = (cpu_seconds(state_dir) - cpu_before) * 1000 / args.requests
            time.sleep(1.0)
            sample = measure(state_dir)
            sample["requests_per_s"] = (args.requests - len(result["errors"])) / result["seconds"]
            sample["replica_cpu_ms_per_request"] = cpu_ms
            sample["answers"] = result["answers"]
            samples["rounds"].append(sample)
            show(f"after load {index + 1}/{args.rounds}", sample)
            print(
                f"{'':<22} {args.requests} requests at concurrency {args.concurrency}: "
                f"{sample['requests_per_s']:.0f}/s, replica CPU {cpu_ms:.2f} ms/request, "
                f"answers {result['answers']}, errors {len(result['errors'])}",
                flush=True,
            )
            if result["errors"]:
                print(f"{'':<22} first error: {result['errors'][0]}", file=sys.stderr)
                return 1
        if args.hold > 0:
            print(f"holding for {args.hold:g} s: replica pid {samples_pids(state_dir)}", flush=True)
            time.sleep(args.hold)
        if args.json:
            args.json.write_text(json.dumps(samples, indent=2) + "\n")
        return 0
    finally:
        control.stop(state_dir)
        if not args.keep_var:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
