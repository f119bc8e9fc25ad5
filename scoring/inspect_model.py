"""Print a SavedModel's signatures as JSON, without loading its variables.

    python -m scoring.inspect_model PATH      # PATH: the SavedModel directory (or its saved_model.pb)

Prints `{"tags": [...], "signatures": {"serving_default": {"method_name": ..., "inputs": {NAME: {"dtype":
"string", "shape": [null]}}, "outputs": {...}}}}` and exits 0. Exit 2 with a one-line reason on stderr when
PATH is not a SavedModel that can be read.

Lynx's web process runs this as a subprocess: it parses only `saved_model.pb` (TF1 and TF2 exports alike),
but reading that protobuf needs TensorFlow, which the web process must never import.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json
import sys
from pathlib import Path
from typing import Any

EXIT_UNREADABLE = 2


def _shape(tensor_shape: Any) -> list[int | None] | None:
    if tensor_shape.unknown_rank:
        return None
    return [dim.size if dim.size >= 0 else None for dim in tensor_shape.dim]


def _tensors(infos: Any) -> dict[str, dict[str, Any]]:
    from tensorflow.python.framework import dtypes

    described = {}
    for name in sorted(infos):
        info = infos[name]
        try:
            dtype = dtypes.as_dtype(info.dtype).name
        except TypeError:
            dtype = f"enum {info.dtype}"
        described[name] = {"dtype": dtype, "shape": _shape(info.tensor_shape), "tensor": info.name}
    return described


def inspect(path: Path) -> dict[str, Any]:
    """The signatures of the first meta graph tagged "serve" (or the only one)."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / "saved_model.pb" if path.is_dir() else path
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(pb.read_bytes())
    graphs = list(saved_model.meta_graphs)
    if not graphs:
        raise ValueError("saved_model.pb holds no meta graph")
    chosen = next((g for g in graphs if "serve" in g.meta_info_def.tags), graphs[0])
    return {
        "tags": sorted(chosen.meta_info_def.tags),
        "tensorflow_version": chosen.meta_info_def.tensorflow_version,
        "signatures": {
            key: {
                "method_name": signature.method_name,
                "inputs": _tensors(signature.inputs),
                "outputs": _tensors(signature.outputs),
            }
            for key, signature in sorted(chosen.signature_def.items())
            if not key.startswith("__")  # "__saved_model_init_op" is plumbing, not a signature
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m scoring.inspect_model SAVED_MODEL_DIR", file=sys.stderr)
        return EXIT_UNREADABLE
    path = Path(args[0])
    if not path.exists():
        print(f"{path} does not exist", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        described = inspect(path)
    except Exception as error:  # noqa: BLE001 - any parse failure means "not a SavedModel we can read"
        print(
            f"saved_model.pb cannot be read: {type(error).__name__}: {error}".splitlines()[0], file=sys.stderr
        )
        return EXIT_UNREADABLE
    print(json.dumps(described))
    return 0


if __name__ == "__main__":
    sys.exit(main())
