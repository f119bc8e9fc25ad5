"""What a replica's process gets to keep its memory down: two malloc arenas (scoring.replicas), and TensorFlow
imported without its eager import of Keras 3 by the default entry script. See bench/replica_memory.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scoring.replicas import ReplicaSpec, lay_out_model, replica_environment

from .conftest import DEFAULT_ENTRY_SCRIPT


def _environment(tmp_path: Path, demo_model_dir: Path, base: dict[str, str]) -> dict[str, str]:
    spec = ReplicaSpec.build(
        entry_script=DEFAULT_ENTRY_SCRIPT, model_path=demo_model_dir, model_name="digits"
    )
    return replica_environment(base, state_dir=tmp_path, model_dir=lay_out_model(tmp_path, spec), spec=spec)


def test_replicas_get_two_malloc_arenas_by_default(tmp_path, demo_model_dir):
    env = _environment(tmp_path, demo_model_dir, {"PATH": "/usr/bin"})
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert "GLIBC_TUNABLES" not in env


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ({"MALLOC_ARENA_MAX": "8"}, {"MALLOC_ARENA_MAX": "8"}),
        (
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"},
            {"MALLOC_ARENA_MAX": None, "GLIBC_TUNABLES": "glibc.malloc.arena_max=4"},
        ),
        (
            {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"},
            {"MALLOC_ARENA_MAX": "2", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"},
        ),
    ],
    ids=["malloc-arena-max", "tunable-arena-max", "other-tunable"],
)
def test_an_arena_limit_set_where_the_supervisor_runs_wins(tmp_path, demo_model_dir, base, expected):
    env = _environment(tmp_path, demo_model_dir, base)
    assert {name: env.get(name) for name in expected} == expected


_IMPORT_PROBE = """
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("entry_module", sys.argv[1])
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)  # as the inference server loads an entry script
loaded = sorted({"keras", "sklearn"} & sys.modules.keys())
leftover = os.environ.get("TF_USE_LEGACY_KERAS")
dense = script.tf.keras.layers.Dense  # tf.keras still works, with Keras 3, once something asks for it
print(json.dumps({"loaded": loaded, "leftover": leftover, "keras": sys.modules["keras"].__version__,
                  "dense": dense.__module__}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("user_value", "keras_loaded"), [(None, False), ("0", True)], ids=["default", "set-by-the-user"]
)
def test_the_default_entry_script_imports_tensorflow_without_keras(
    tmp_path, demo_model_dir, user_value, keras_loaded
):
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    if user_value is not None:
        base["TF_USE_LEGACY_KERAS"] = user_value
    env = _environment(tmp_path, demo_model_dir, base)
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, str(DEFAULT_ENTRY_SCRIPT)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == (["keras", "sklearn"] if keras_loaded else [])
    assert result["leftover"] == user_value  # set only while TensorFlow imported, a user's value untouched
    assert result["keras"].startswith("3.") and result["dense"].startswith("keras.")


@pytest.mark.slow
def test_a_served_replica_runs_with_two_arenas_and_without_scikit_learn(serve, heldout_digits):
    from scoring.demo_model import render_digit

    served = serve(replicas=1)
    replica = served.status()["replicas"][0]
    (worker,) = replica["worker_pids"]
    for pid in (replica["pid"], worker):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"MALLOC_ARENA_MAX=2" in environ
    # Keras is pure Python; scikit-learn, which only Keras would bring in, maps extension modules.
    mapped = Path(f"/proc/{worker}/maps").read_text()
    assert "libtensorflow_cc" in mapped and "/sklearn/" not in mapped
    x_test, _ = heldout_digits
    response = served.score(render_digit(x_test[0], fmt="PNG"))
    assert response.status_code == 200, response.text
    assert "/sklearn/" not in Path(f"/proc/{worker}/maps").read_text()


def test_a_replica_of_a_gpu_deployment_is_told_to_require_the_gpu(tmp_path, demo_model_dir):
    plain = _environment(tmp_path, demo_model_dir, {"PATH": "/usr/bin", "LYNX_REQUIRE_GPU": "1"})
    assert "LYNX_REQUIRE_GPU" not in plain  # not inherited from the supervisor's environment
    spec = ReplicaSpec.from_mapping(
        {"entry_script": str(DEFAULT_ENTRY_SCRIPT), "model_path": str(demo_model_dir), "require_gpu": True}
    )
    env = replica_environment(
        {"PATH": "/usr/bin"}, state_dir=tmp_path, model_dir=lay_out_model(tmp_path, spec), spec=spec
    )
    assert env["LYNX_REQUIRE_GPU"] == "1"
