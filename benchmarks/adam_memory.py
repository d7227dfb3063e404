"""Peak tensor memory of one Adam step over SD 2.x's trainable encoder subset: foreach vs fused.

    python benchmarks/adam_memory.py

197M float32 parameters (the size of `ffn+last-attn` in SD 2.x's 23-layer encoder) with gradients; two
Adam steps; live tensor bytes counted op by op (benchmarks/realscale.py's TensorMemory). Prints and writes
benchmarks/results/adam_memory.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realscale import GIB, TensorMemory  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def peak(fused: bool) -> dict:
    params = [torch.nn.Parameter(torch.randn(4096, 1024)) for _ in range(47)]  # 197M, like ffn+last-attn
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.Adam(params, lr=1e-4, fused=fused, foreach=None if fused else True)
    tensors = TensorMemory().track(*params, *[p.grad for p in params])
    with tensors:
        optimizer.step()
        optimizer.step()
    held = sum(4 * p.numel() for p in params) * 4  # parameters, gradients and the two Adam moments
    return {
        "peak_gib": round(tensors.peak / GIB, 3),
        "params_grads_moments_gib": round(held / GIB, 3),
        "temporaries_gib": round((tensors.peak - held) / GIB, 3),
        "parameters": sum(p.numel() for p in params),
    }


def main() -> int:
    result = {"foreach": peak(False), "fused": peak(True)}
    for name, record in result.items():
        print(f"{name:8} peak {record['peak_gib']:.2f} GiB, of which temporaries {record['temporaries_gib']:.2f} GiB")
    out = ROOT / "benchmarks" / "results" / "adam_memory.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
