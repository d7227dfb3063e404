"""The benchmark scripts run (at reduced scale) and their memory counter counts what it should."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _realscale():
    spec = importlib.util.spec_from_file_location("realscale", ROOT / "benchmarks" / "realscale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_tensor_memory_counts_live_storage_and_its_peak():
    weights = torch.nn.Linear(256, 256)  # made before: counted only because it is tracked
    tensors = _realscale().TensorMemory().track(weights)
    held = (256 * 256 + 256) * 4
    assert tensors.current == held
    with tensors:
        a = torch.zeros(1024, 1024)  # 4 MiB
        b = a + 1  # 4 MiB more, a view of it adds nothing
        view = b[:10]
        del a
        c = torch.ones(512, 1024)  # 2 MiB
    assert tensors.peak == held + 8 * 2**20
    assert tensors.current == held + 6 * 2**20
    del b, view, c
    assert tensors.current == held


def test_realscale_runs_at_reduced_scale(tmp_path):
    out = tmp_path / "realscale.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "realscale.py"), "--scale", "reduced", "--frames", "4",
                    "--unet-checkpointing", "--tensor-memory", "--no-load", "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)  # fmt: skip
    result = json.loads(out.read_text())
    assert result["config"]["unet_checkpointing"] and result["video_shape"][1] == 4
    for phase in ("erase", "save", "swap", "video_generate"):
        assert result["phases"][phase]["seconds"] >= 0 and result["phases"][phase]["peak_tensor_gib"] > 0
    assert result["erase_costs"]["optimise_steps"] == 2
    assert "peak_tensor_gib" in result["goals"]
