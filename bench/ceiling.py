"""The model alone, in-process: the serving signature called directly at a fixed batch size, no server.

Run as a child of the benchmark (TensorFlow stays out of the benchmark's own process) and driven over stdin:

    python -m bench.ceiling --model DIR --images DIR
    < "32 5.0"            batch size, seconds
    > {"batch": 32, "images_per_s": ..., "images_per_cpu_s": ..., "call_ms": [...]}
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True, help="the SavedModel directory")
    parser.add_argument("--images", type=Path, required=True, help="a directory of encoded images")
    args = parser.parse_args()

    import tensorflow as tf

    signature = tf.saved_model.load(str(args.model)).signatures["serving_default"]
    images = [path.read_bytes() for path in sorted(args.images.iterdir()) if path.is_file()]
    devices = [device.name for device in tf.config.list_physical_devices("GPU")]
    print(json.dumps({"ready": True, "devices": devices or ["CPU"]}), flush=True)

    turn = 0

    def call(batch: int) -> None:
        nonlocal turn
        chosen = [images[(turn + i) % len(images)] for i in range(batch)]
        turn += batch
        signature(image_bytes=tf.constant(chosen))["probabilities"].numpy()

    for line in sys.stdin:
        batch_text, seconds_text = line.split()
        batch, seconds = int(batch_text), float(seconds_text)
        call(batch)  # warm: the first call at a new batch size sets up its kernels
        calls: list[float] = []
        cpu_started = time.process_time()  # every thread of this process: TensorFlow's pools included
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or len(calls) < 3:
            begin = time.perf_counter()
            call(batch)
            calls.append((time.perf_counter() - begin) * 1000)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        result = {
            "batch": batch,
            "images_per_s": batch * len(calls) / elapsed,
            "images_per_cpu_s": batch * len(calls) / cpu if cpu else None,
            "call_ms": calls,
        }
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
