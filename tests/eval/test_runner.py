import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from t2v_unlearn.encoders import load_pipeline
from t2v_unlearn.eval.runner import (
    GenerationConfig,
    encoder_tag,
    generate_rows,
    make_rows,
    model_for_kind,
    pending_rows,
    save_sample,
    slug,
)

FAST = GenerationConfig(steps=2, num_frames=3, progress=False)


class CountingLoader:
    def __init__(self):
        self.calls = []

    def __call__(self, kind, **kwargs):
        self.calls.append((kind, kwargs["model"], kwargs["text_encoder"]))
        return load_pipeline(kind, **kwargs)


def test_rows_have_deterministic_paths():
    rows = make_rows("image", "tinyworld", {"original": None, "unlearned": "ckpt"}, {"Van Gogh": ["a", "b"]}, [0, 7])
    assert len(rows) == 8
    assert rows[0].path("/r") == Path("/r/samples/image/original/van-gogh/p00_s0.npy")
    tag = encoder_tag("ckpt")
    assert rows[-1].path("/r") == Path(f"/r/samples/image/unlearned-{tag}/van-gogh/p01_s7.npy")
    other = make_rows("image", "tinyworld", {"unlearned": "other-ckpt"}, {"Van Gogh": ["b"]}, [7])[0]
    assert other.path("/r") != rows[-1].path("/r")  # two checkpoints never share samples
    assert slug("French horn!") == "french-horn"


def test_generation_resumes_and_identical_noise_gives_identical_samples(tiny_pipelines, tmp_path):
    prompts = {"zorbo": ["a picture of zorbo", "zorbo"], "circle": ["a circle"]}
    # two encoder labels with the same (original) encoder: every (prompt, seed) pair must come out identical
    rows = make_rows("image", str(tiny_pipelines), {"original": None, "unlearned": None}, prompts, [0, 1])
    loader = CountingLoader()
    done = generate_rows(rows, tmp_path, FAST, load=loader)
    assert len(done) == len(rows) == 12 and pending_rows(rows, tmp_path) == []
    assert len(loader.calls) == 1  # one pipeline load for all rows of one (kind, model, encoder)
    assert loader.calls[0][1] == str(tiny_pipelines / "image")
    first = {r: np.load(r.path(tmp_path)) for r in rows}
    assert all(a.shape == (1, 32, 32, 3) and a.dtype == np.uint8 for a in first.values())
    half = len(rows) // 2
    for a, b in zip(rows[:half], rows[half:], strict=True):
        np.testing.assert_array_equal(first[a], first[b])
    assert not np.array_equal(first[rows[0]], first[rows[1]])  # another seed is another sample
    # rerun: nothing to do, no pipeline loaded, files untouched
    mtimes = {r: r.path(tmp_path).stat().st_mtime_ns for r in rows}
    assert generate_rows(rows, tmp_path, FAST, load=loader) == [] and len(loader.calls) == 1
    assert all(r.path(tmp_path).stat().st_mtime_ns == mtimes[r] for r in rows)
    # an interrupted run: one output missing, exactly that row is redone, with the same pixels
    rows[3].path(tmp_path).unlink()
    assert generate_rows(rows, tmp_path, FAST, load=loader) == [rows[3]]
    redone = np.load(rows[3].path(tmp_path)).astype(int)
    assert np.abs(redone - first[rows[3]]).max() <= 1  # alone instead of in a batch of 12: float rounding only
    assert not list(tmp_path.rglob(".*.tmp*"))  # no temporary file left behind


def test_video_rows_are_one_file_per_video(tiny_pipelines, tmp_path):
    rows = make_rows("video", str(tiny_pipelines), {"original": None}, {"zorbo": ["zorbo"]}, [0])
    generate_rows(rows, tmp_path, FAST)
    assert np.load(rows[0].path(tmp_path)).shape == (3, 32, 32, 3)
    assert model_for_kind(str(tiny_pipelines), "video") == str(tiny_pipelines / "video")


SCRIPT = textwrap.dedent(
    """
    import json, sys
    from accelerate import PartialState
    from t2v_unlearn.eval.runner import GenerationConfig, generate_distributed, make_rows
    root, model = sys.argv[1], sys.argv[2]
    prompts = {"zorbo": ["zorbo", "a picture of zorbo"], "circle": ["a circle"]}
    rows = make_rows("image", model, {"original": None}, prompts, [0, 1])
    done = generate_distributed(rows, root, GenerationConfig(steps=2, progress=False, image_batch_size=2))
    state = PartialState(cpu=True)
    out = {"rank": state.process_index, "world": state.num_processes, "done": [str(r.path(root)) for r in done],
           "all_present": all(r.path(root).is_file() for r in rows)}
    with open(f"{root}/rank{state.process_index}.json", "w") as f:
        json.dump(out, f)
    """
)


def test_two_cpu_processes_split_the_rows_under_accelerate(tiny_pipelines, tmp_path):
    script = tmp_path / "shard.py"
    script.write_text(SCRIPT)
    root = tmp_path / "out"
    root.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    with socket.socket() as probe:  # a free port, so parallel test runs do not collide on 29500
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # `--cpu --num_processes 2` would need mpirun; `--multi_gpu` selects the torchrun launcher, and the runner's
    # PartialState(cpu=True) then joins the group over gloo
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no",
               "--dynamo_backend", "no", str(script), str(root), str(tiny_pipelines)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((root / f"rank{i}.json").read_text()) for i in range(2)]
    assert [r["world"] for r in reports] == [2, 2]
    shares = [set(r["done"]) for r in reports]
    assert shares[0] and shares[1] and not shares[0] & shares[1]  # both worked, no row twice
    assert len(shares[0] | shares[1]) == 6
    assert all(r["all_present"] for r in reports)  # every process sees every file after wait_for_everyone


def test_a_failed_sample_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "samples" / "p00_s0.npy"
    save_sample(np.zeros((1, 4, 4, 3), np.uint8), path)

    def full_disk(file, array):
        Path(file).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(OSError):
        save_sample(np.ones((1, 4, 4, 3), np.uint8), path)
    monkeypatch.undo()
    assert np.load(path).max() == 0  # the old sample, whole
    assert [p.name for p in path.parent.iterdir()] == ["p00_s0.npy"]
