"""The CLI end to end, in subprocesses, on TinyWorld with small step counts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from t2v_unlearn.pipelines.video_io import read_video

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "t2v_unlearn", *args], capture_output=True, text=True,
                            env=ENV, timeout=600)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def test_concepts_lists_the_taxonomy_tab_separated():
    lines = cli("concepts").stdout.strip().splitlines()
    rows = [line.split("\t") for line in lines]
    assert len(rows) == 18 and all(len(r) == 3 for r in rows)
    assert ["id", "zorbo", "zorby"] in rows
    assert {r[0] for r in rows} == {"object", "style", "id"}


def test_the_entry_point_freezes_what_the_libraries_built_and_collects_the_rest():
    """`t2v-unlearn` (`t2v_unlearn.__main__:run`, under `script`) loads the libraries with the cyclic collector off,
    freezes what they built and turns the collector back on; a program that imports `t2v_unlearn.commands` itself
    keeps its own."""
    script = ("import gc, sys; sys.argv = ['t2v-unlearn', 'concepts']; from t2v_unlearn.__main__ import run; "
              "code = run(); print(code, gc.isenabled(), gc.get_freeze_count())")  # fmt: skip
    lines = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV,
                           check=True).stdout.splitlines()  # fmt: skip
    code, enabled, frozen = lines[-1].split()
    assert code == "0" and enabled == "True" and int(frozen) > 100_000  # the libraries: some 400,000 objects
    assert any(line.startswith("id\tzorbo") for line in lines)  # and the command ran
    script = "import gc, t2v_unlearn.commands; print(gc.isenabled(), gc.get_freeze_count())"
    plain = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, check=True)
    assert plain.stdout.split() == ["True", "0"]


def test_the_script_flushes_its_output_and_skips_the_teardown_only_after_a_finished_command():
    """`t2v-unlearn` (`t2v_unlearn.__main__:script`) leaves without the interpreter's teardown (atexit handlers never
    run) once the command returned, with its output flushed into a pipe and its exit code kept, refusals included;
    argparse's exit leaves the ordinary way."""
    script = ("import atexit, sys; atexit.register(print, 'teardown'); sys.argv = ['t2v-unlearn', *sys.argv[1:]]; "
              "from t2v_unlearn.__main__ import script; script()")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, "concepts"], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0 and "id\tzorbo" in done.stdout and "teardown" not in done.stdout
    refused = subprocess.run([sys.executable, "-c", script, "erase", "--concept", " "], capture_output=True,
                             text=True, env=ENV)  # fmt: skip
    assert refused.returncode == 2 and "concept name is empty" in refused.stderr and "teardown" not in refused.stdout
    unknown = subprocess.run([sys.executable, "-c", script, "erase", "--no-such-flag"], capture_output=True,
                             text=True, env=ENV)  # fmt: skip
    assert unknown.returncode == 2 and "teardown" in unknown.stdout and "Traceback" not in unknown.stderr


def test_erase_then_generate_with_the_checkpoint(tmp_path):
    out = tmp_path / "zorbo-erased"
    result = cli("erase", "--concept", "zorbo", "--out", str(out), "--max-steps", "4", "--shots", "2",
                 "--shot-steps", "3", "--preview-steps", "2", "--device", "cpu", "--quiet",
                 "--unet-checkpointing", "--offload", "--vae-slicing", "--save-dtype", "float16",
                 "--preview-video")  # fmt: skip
    assert f"checkpoint written to {out}" in result.stdout and "time: load" in result.stdout
    manifest = json.loads((out / "unlearn.json").read_text())
    assert manifest["config"]["unet_checkpointing"] and manifest["config"]["offload"]
    assert manifest["saved_dtype"] == "float16"
    assert "--offload has no effect on --device cpu" in result.stderr
    assert manifest["concepts"] == ["zorbo"] and manifest["steps"] <= 4
    assert {"load", "shots", "optimise", "save"} <= set(manifest["timings"])
    assert (out / "text_encoder" / "model.safetensors").is_file()
    grid = Image.open(out / "preview" / "images.png")
    assert grid.width > grid.height / 2
    gifs = sorted((out / "preview").glob("video_*.gif"))
    assert gifs and Image.open(gifs[0]).n_frames == 8

    refused = cli("erase", "--concept", "zorbo", "--out", str(out), check=False)
    assert refused.returncode != 0 and "--overwrite" in refused.stderr

    video_dir = tmp_path / "video"
    cli("generate", "--kind", "video", "--prompt", "zorbo moving left", "--text-encoder", str(out),
        "--steps", "2", "--out", str(video_dir), "--device", "cpu")  # fmt: skip
    frames = read_video(video_dir / "video_seed0.mp4")
    assert frames.shape == (8, 64, 64, 3)
    pngs = sorted((video_dir / "video_seed0_frames").glob("*.png"))
    lossless = np.stack([np.asarray(Image.open(p)) for p in pngs])
    assert lossless.shape == (8, 64, 64, 3)
    assert np.abs(lossless.astype(int) - frames.astype(int)).mean() < 12  # mp4 is lossy, but the same video
    assert Image.open(video_dir / "video_seed0.gif").n_frames == 8


def test_generate_images(tmp_path):
    cli("generate", "--kind", "image", "--prompt", "a picture of a star", "--num", "2", "--steps", "2",
        "--out", str(tmp_path / "img"), "--device", "cpu")  # fmt: skip
    images = sorted((tmp_path / "img").glob("image_seed*.png"))
    assert [p.name for p in images] == ["image_seed0.png", "image_seed1.png"]
    assert Image.open(images[0]).size == (64, 64)
    saved = json.loads((tmp_path / "img" / "generate.json").read_text())
    assert saved["config"]["prompt"] == "a picture of a star" and saved["config"]["num"] == 2
    # the saved config re-makes the same images
    cli("generate", "--config", str(tmp_path / "img" / "generate.json"), "--out", str(tmp_path / "again"),
        "--device", "cpu")  # fmt: skip
    again = sorted((tmp_path / "again").glob("image_seed*.png"))
    assert len(again) == 2
    for first, second in zip(images, again, strict=True):
        assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))


@pytest.mark.parametrize(
    "args, message",
    [
        (["erase", "--concept", "", "--no-preview"], "empty"),
        (["erase", "--concept", "unicorn", "--no-preview"], "unknown TinyWorld concept"),
        (["erase", "--concept", "zorbo", "--images", "/no/such/folder"], "not a folder"),
        (["erase", "--concept", "zorbo", "--eval-timesteps", "0"], "at least 1"),
        (["generate", "--prompt", "zorbo", "--model", "/no/such/model"], "neither"),
        (["generate", "--prompt", "zorbo", "--text-encoder", "/no/such/ckpt"], "does not exist"),
        (["generate", "--prompt", "zorbo", "--steps", "0"], "--steps must be between 1"),
        (["generate", "--prompt", "zorbo", "--kind", "video", "--frames", "100000"], "--frames must be between 1"),
        (["generate", "--prompt", "zorbo", "--fps", "0"], "--fps must be between 1"),
        (["generate", "--prompt", "zorbo", "--num", "0"], "--num must be between 1"),
        (["generate", "--prompt", "zorbo", "--guidance", "nan"], "--guidance must be 0 or more"),
        (["generate", "--steps", "3"], "--prompt is empty"),
        (["generate", "--config", __file__.replace("test_cli.py", "conftest.py")], "Expecting value"),
    ],
)
def test_bad_input_fails_with_a_clear_message_and_no_output(tmp_path, args, message):
    out = tmp_path / "out"
    result = cli(*args, "--out", str(out), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


def test_erase_flags_are_built_from_erase_config():
    from t2v_unlearn.commands import build_parser
    from t2v_unlearn.config_args import config_from_args
    from t2v_unlearn.encoders import EraseConfig

    parser = build_parser()
    assert config_from_args(EraseConfig, parser.parse_args(["erase", "--concept", "zorbo"])) == EraseConfig()
    args = parser.parse_args(["erase", "--concept", "zorbo", "--to", "plimka", "--synonym", "zorbi", "--synonym",
                              "zrb", "--no-variants", "--betas", "0.8", "0.9", "--lr", "3e-4"])  # fmt: skip
    config = config_from_args(EraseConfig, args)
    assert config.anchor == "plimka" and config.synonyms == ("zorbi", "zrb") and not config.variants
    assert config.betas == (0.8, 0.9) and config.lr == 3e-4
    saved = {**EraseConfig(lr=1e-3, seed=7).to_dict()}
    rerun = config_from_args(EraseConfig, parser.parse_args(["erase", "--seed", "8"]), base=saved)
    assert rerun.lr == 1e-3 and rerun.seed == 8  # the saved value, unless a flag overrides it


def test_erase_tells_a_levelled_gap_from_one_that_never_closed():
    from types import SimpleNamespace

    from t2v_unlearn.commands.erase import stop_message

    def result(gaps, robust=True, stopped_by="max_steps", threshold=0.05, anchor="triangle"):
        history = [{"step": 5 * (i + 1), "gap_ratio": g} for i, g in enumerate(gaps)]
        concepts = [SimpleNamespace(name="square", anchor=anchor)]
        return SimpleNamespace(history=history, gap_ratio=threshold, robust=robust, stopped_by=stopped_by, steps=50,
                               concepts=concepts)  # fmt: skip

    shape = [0.66, 0.47, 0.31, 0.21, 0.12, 0.066, 0.057, 0.074, 0.057, 0.076]  # the shape's default erase, seed 0
    note = stop_message(result(shape))
    assert note.startswith("note: the UNet's prediction gap to the anchor levelled off (lowest 0.06, last 0.08")
    assert stop_message(result(shape, robust=False)).startswith("warning: the stop rule did not fire")
    dotted = [0.54, 0.40, 0.35, 0.31, 0.29, 0.26, 0.24, 0.25, 0.19, 0.154]  # a style's default erase on v2.3
    falling = stop_message(result(dotted, threshold=0.1))
    assert falling.startswith("note: the UNet's prediction gap to the anchor was still falling slowly"), falling
    assert stop_message(result(dotted, threshold=0.05)).startswith("warning")  # not within twice the threshold
    assert stop_message(result([0.9, 0.6, 0.3])).startswith("warning")  # far from the threshold: a warning
    assert stop_message(result([0.3, 0.04], stopped_by="anchor_gap")) is None
    assert stop_message(result([])) is None  # no gap checks (another rule)
    # toward several anchors the gap is to the mean of their predictions, which one drawn shape does not reach: it
    # levels off far above the threshold (the square's default erase, seed 0), and that is no warning
    several = stop_message(result([0.76, 0.56, 0.36, 0.22, 0.22, 0.25, 0.27, 0.24, 0.23, 0.27], anchor="a, b"))
    assert several.startswith("note: erased toward several anchors (square: a, b)") and "0.27" in several, several


def test_erase_says_when_an_attacker_may_bring_the_concept_back():
    from types import SimpleNamespace

    from t2v_unlearn.commands.erase import robustness_note

    def run(robust, *categories):
        return SimpleNamespace(robust=robust, concepts=[SimpleNamespace(category=c) for c in categories])

    assert "--robust" in robustness_note(run(False, "id"))
    assert robustness_note(run(True, "id")) is None and robustness_note(run(True, "style")) is None
    # a shape came back under the attack even after the inner attack: robust runs on shapes say so
    assert "--attacks embedding" in robustness_note(run(True, "style", "object"))


def test_erase_config_reruns_bit_for_bit(tmp_path):
    from safetensors.torch import load_file

    first, second = tmp_path / "first", tmp_path / "second"
    made = cli("erase", "--concept", "striped", "--out", str(first), "--max-steps", "3", "--shots", "2",
               "--shot-steps", "2", "--no-preview", "--quiet", "--device", "cpu", "--seed", "3",
               "--to", "dotted")  # fmt: skip
    # 3 steps cannot close the prediction gap to a new style: the user is told the rule did not fire
    assert "stopped by max_steps" in made.stdout and "warning: the stop rule did not fire" in made.stdout
    cli("erase", "--config", str(first / "unlearn.json"), "--out", str(second), "--no-preview", "--quiet",
        "--device", "cpu")  # fmt: skip
    a = load_file(str(first / "text_encoder" / "model.safetensors"))
    b = load_file(str(second / "text_encoder" / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    manifest = json.loads((second / "unlearn.json").read_text())
    assert manifest["concepts"] == ["striped"] and manifest["config"]["anchor"] == "dotted"


def test_errors_name_the_command_and_debug_shows_the_traceback(tmp_path, capsys):
    from t2v_unlearn.commands import main

    missing = str(tmp_path / "no-such-checkpoint")
    assert main(["inspect", "tinyworld", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: inspect: ") and missing in err and "Traceback" not in err
    with pytest.raises((FileNotFoundError, ValueError)):
        main(["--debug", "inspect", "tinyworld", missing])


def test_an_interrupt_or_a_system_error_is_a_message_not_a_traceback(monkeypatch, capsys):
    from t2v_unlearn import commands as cli

    def interrupted(args):
        raise KeyboardInterrupt

    def disk_full(args):
        raise OSError(28, "No space left on device", "/full/disk/out")

    build = cli.build_parser
    for fake, code, words in ((interrupted, 130, "interrupted"), (disk_full, 1, "No space left on device (/full")):
        monkeypatch.setattr(cli, "build_parser", lambda fake=fake: _with_func(build(), fake))
        assert cli.main(["inspect", "tinyworld", "x"]) == code
        assert words in capsys.readouterr().err


def _with_func(parser, func):
    parser.set_defaults(func=func)
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.set_defaults(func=func)
    return parser
