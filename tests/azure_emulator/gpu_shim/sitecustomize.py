"""The node's GPUs as a scoring host's TensorFlow would see them (imported by Python at start-up).

There is no GPU where the emulator runs, and where there is one it is not the emulated node's. The emulator
sets AZURE_EMULATOR_GPUS to how many GPUs the framework in the pod can use: the GPUs the pod was allocated
when the environment's framework can load the image's CUDA, else 0 (on AKS TensorFlow then silently runs on
the CPU). When `tensorflow` is first imported, and only then, its device listings are made to say exactly
that many GPUs; nothing else of TensorFlow is touched, and nothing at all when the variable is unset.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any


def _patch(tf: Any, count: int) -> None:
    config = tf.config
    gpus = [config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU") for i in range(count)]

    def override(original: Any) -> Any:
        def devices(device_type: str | None = None) -> list[Any]:
            if device_type is not None and device_type.upper() == "GPU":
                return list(gpus)
            others = [d for d in original(device_type) if d.device_type != "GPU"]
            return others + (list(gpus) if device_type is None else [])

        devices.__doc__ = original.__doc__
        return devices

    for namespace in (config, getattr(config, "experimental", None)):
        for name in ("list_physical_devices", "get_visible_devices"):
            if namespace is not None and hasattr(namespace, name):
                setattr(namespace, name, override(getattr(namespace, name)))


class _TensorflowHook(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the normal finders, then patches it right after its module has run."""

    def __init__(self, count: int) -> None:
        self.count = count

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # one import, one patch
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader, count = spec.loader, self.count
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            _patch(module, count)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_GPUS = os.environ.get("AZURE_EMULATOR_GPUS")
if _GPUS is not None and "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _TensorflowHook(int(_GPUS)))
