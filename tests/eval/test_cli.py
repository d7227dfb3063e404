import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from t2v_unlearn.commands.eval import add_arguments as add_eval_arguments
from t2v_unlearn.commands.eval import run as run_eval
from t2v_unlearn.eval.evaluate import EvalConfig
from t2v_unlearn.pipelines.video_io import write_gif

HEADLINE = ("erasure", "retention", "harmonic_mean")


def _parse(argv):
    return add_eval_arguments(argparse.ArgumentParser()).parse_args(argv)


@pytest.fixture
def checkpoint(tiny_pipelines, tmp_path):
    """A hand-made encoder checkpoint: the tiny pipeline's encoder with perturbed feed-forward weights."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from t2v_unlearn.encoders import fingerprint

    base = CLIPTextModel.from_pretrained(tiny_pipelines / "image" / "text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(tiny_pipelines / "image" / "tokenizer")
    unlearned = CLIPTextModel.from_pretrained(tiny_pipelines / "image" / "text_encoder")
    with torch.no_grad():
        for name, parameter in unlearned.named_parameters():
            if "mlp" in name:
                parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)))
    folder = tmp_path / "ckpt"
    unlearned.save_pretrained(folder / "text_encoder")
    manifest = {
        "concepts": ["zorbo"],
        "base_model": str(tiny_pipelines),
        "base_fingerprint": fingerprint.encoder_fingerprint(base),
        "base_architecture": fingerprint.architecture(base.config),
        "tokenizer_fingerprint": fingerprint.tokenizer_fingerprint(tokenizer),
    }
    (folder / "unlearn.json").write_text(json.dumps(manifest))
    return folder


def test_eval_generates_scores_and_reports_a_checkpoint(checkpoint, tiny_clip_dir, tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--text-encoder", str(checkpoint), "--quick", "--steps", "2", "--num-frames", "3", "--suite", "tinyworld",
            "--detector", str(tiny_clip_dir), "--bootstrap-resamples", "200", "--no-progress",
            "--attacks", "synonyms,misspellings,paraphrases", "--out", str(out)]  # fmt: skip
    assert run_eval(_parse(argv)) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out  # each kind's headline with the erased concept's floor beside it
    assert all(f"{kind}: erasure " in printed for kind in ("image", "video")) and "; false-hit floor zorbo " in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["targets"] == ["zorbo"]  # from unlearn.json
    assert metrics["model"] == json.loads((checkpoint / "unlearn.json").read_text())["base_model"]
    for kind in ("image", "video"):
        for key in HEADLINE:
            assert set(metrics[kind][key]) == {"value", "low", "high", "n"}
        concepts = metrics[kind]["concepts"]
        # quick: the target + 4 retained, 4 prompts, 2 seeds (videos: + 2 retained, 2 prompts, 1 seed)
        n_concepts, n_prompts, n_seeds = (5, 4, 2) if kind == "image" else (3, 2, 1)
        assert list(concepts)[0] == "zorbo" and len(concepts) == n_concepts
        assert concepts["zorbo"]["n_prompts"] == n_prompts and concepts["zorbo"]["n_seeds"] == n_seeds
        assert concepts["zorbo"]["frames_per_video"] == (1 if kind == "image" else 3)
        assert metrics[kind]["erasure"]["n"] == n_prompts * n_seeds
        # the honesty figures: the floor of every scored concept, the collateral distance, a note on 4 prompts
        assert set(metrics[kind]["floor"]) == set(concepts)
        assert all(0 <= f["value"] <= 1 and f["n"] > 0 for f in metrics[kind]["floor"].values())
        assert metrics[kind]["collateral"]["sample_distance"]["value"] > 0
        assert any(f"only {n_prompts} prompt" in note for note in metrics[kind]["notes"])
    assert metrics["collateral_encoder"]["mean_squared_difference"] > 0
    for family in ("synonyms", "misspellings", "paraphrases"):
        for kind in ("image", "video"):
            entry = metrics["attacks"][family][kind]
            assert set(entry["leakage"]) == {"value", "low", "high", "n"} and entry["leakage"]["n"] > 0
            assert not set(entry["prompts"]["zorbo~" + family]) & set(metrics["config"]["concepts"])
    # the same videos scored again after an H.264 round trip, from real mp4 files
    assert set(metrics["video_mp4"]["erasure"]) == {"value", "low", "high", "n"}
    assert metrics["video_mp4"]["erasure"]["n"] == metrics["video"]["erasure"]["n"]
    assert len(list((out / "decoded").rglob("*.mp4"))) == 2 * 3 * 2  # 2 encoders x 3 concepts x 2 prompts
    # the unlearned encoder changed the samples; the original ones are the base model's
    original = np.load(out / "samples/image/original/zorbo/p00_s0.npy")
    (unlearned_dir,) = (out / "samples/image").glob("unlearned-*")  # tagged by the checkpoint's fingerprint
    unlearned = np.load(unlearned_dir / "zorbo/p00_s0.npy")
    assert original.shape == (1, 32, 32, 3) and not np.array_equal(original, unlearned)
    report = (out / "report.html").read_text()
    assert "False-hit floor" in report and "<h2>Attacks</h2>" in report and "Collateral, without a detector" in report
    assert report.count("data:image/png;base64,") >= 8 and report.count("data:image/gif;base64,") >= 4
    assert json.loads((out / "eval_config.json").read_text())["quick"] is True
    assert not (tmp_path / ".results.partial").exists()
    # an existing --out is refused unless --overwrite
    assert run_eval(_parse(argv)) == 2
    assert "already exists" in capsys.readouterr().err


def test_the_embedding_attack_inverts_the_original_models_images_of_the_concept(checkpoint, tiny_clip_dir, tmp_path,
                                                                               monkeypatch, capsys):  # fmt: skip
    """Both encoders are attacked from the same images, the original model's (an unlearned pipeline would draw the
    anchor), and never from the erase's own shots; then each run moves the token through its own encoder."""
    from t2v_unlearn.encoders.fingerprint import encoder_fingerprint
    from t2v_unlearn.eval import embedding_attack

    manifest = json.loads((checkpoint / "unlearn.json").read_text())
    erase_seed = embedding_attack.ATTACK_SHOT_SEED  # an erase that drew the attack's default seeds
    (checkpoint / "unlearn.json").write_text(json.dumps({**manifest, "config": {"seed": erase_seed, "num_shots": 4}}))
    drawn, inverted = [], []
    real_shots, real_invert = embedding_attack.generate_shots, embedding_attack.invert_concept

    def spy_shots(pipe, spec, config):
        drawn.append((encoder_fingerprint(pipe.text_encoder), config.seed, config.num_shots, config.shot_steps))
        return real_shots(pipe, spec, config)

    def short_invert(pipe, text_encoder, concept, shots, config):
        inverted.append((encoder_fingerprint(text_encoder), shots, config.max_norm))
        short = embedding_attack.EmbeddingAttackConfig(steps=3, max_norm=config.max_norm)
        return real_invert(pipe, text_encoder, concept, shots, short)

    monkeypatch.setattr(embedding_attack, "generate_shots", spy_shots)
    monkeypatch.setattr(embedding_attack, "invert_concept", short_invert)
    out = tmp_path / "results"
    argv = ["--text-encoder", str(checkpoint), "--quick", "--steps", "2", "--kind", "image", "--suite", "tinyworld",
            "--detector", str(tiny_clip_dir), "--bootstrap-resamples", "50", "--no-progress", "--attacks", "embedding",
            "--attack-draws", "2", "--attack-max-norm", "2", "--out", str(out)]  # fmt: skip
    assert run_eval(_parse(argv)) == 0, capsys.readouterr().err
    assert "attack embedding, image: leakage " in capsys.readouterr().out  # the summary says what the attack got
    original = manifest["base_fingerprint"]
    assert len(drawn) == 2 and {by for by, *_ in drawn} == {original}  # two attackers' images, by the original
    seeds = [seed for _, seed, *_ in drawn]
    assert len(set(seeds)) == 2 and all(count == 4 for _, _, count, _ in drawn)
    assert {steps for *_, steps in drawn} == {12}  # the instrument's, whatever the erase's default for the category
    for seed in seeds:
        assert not set(embedding_attack.shot_seeds(seed, 4)) & set(embedding_attack.shot_seeds(erase_seed, 4))
    # per encoder, one inversion per draw: the control's first, from the very images the unlearned one gets
    assert [fp == original for fp, _, _ in inverted] == [True, True, False, False]
    assert np.array_equal(inverted[0][1], inverted[2][1]) and not np.array_equal(inverted[0][1], inverted[1][1])
    assert {bound for _, _, bound in inverted} == {2.0}  # --attack-max-norm bounds every attacker
    attack = json.loads((out / "metrics.json").read_text())["attacks"]["embedding"]
    assert [d["shot_seed"] for d in attack["budget"]["draws"]] == seeds and attack["budget"]["max_norm"] == 2.0
    leakage = attack["image"]["leakage"]
    assert set(leakage) == {"value", "low", "high", "n"} and leakage["n"] == 2 * 4 * 2  # draws x prompts x seeds
    each = attack["image"]["by_draw"]  # each attacker's own rate, and the pooled one their mean (equal plans)
    assert [d["seed"] for d in each] == [a["seed"] for a in attack["budget"]["draws"]]
    assert leakage["value"] == pytest.approx(np.mean([d["leakage"] for d in each]), abs=1e-3)
    report = (out / "report.html").read_text()
    assert "<h2>Attacks</h2>" in report and f"for each of 2 attackers (S = {seeds[0]}, {seeds[1]})" in report
    assert "held within 2 token-embedding lengths (a bounded attacker)" in report and "by attacker: " in report
    assert "the interval resamples attackers" in report


def test_interrupted_run_with_other_options_is_refused(checkpoint, tmp_path, capsys):
    out = tmp_path / "results"
    partial = tmp_path / ".results.partial"
    partial.mkdir()
    (partial / "eval_config.json").write_text(json.dumps({"steps": 99}))
    argv = ["--text-encoder", str(checkpoint), "--quick", "--steps", "2", "--out", str(out), "--no-progress"]
    assert run_eval(_parse(argv)) == 2
    assert "interrupted evaluation with different" in capsys.readouterr().err


def test_missing_inputs_are_clear_errors(tmp_path, capsys):
    assert run_eval(_parse(["--out", str(tmp_path / "o")])) == 2
    assert "pass --text-encoder DIR" in capsys.readouterr().err
    assert run_eval(_parse(["--text-encoder", str(tmp_path), "--out", str(tmp_path / "o")])) == 2
    assert "no unlearn.json" in capsys.readouterr().err


def test_scoring_existing_video_files_end_to_end(tiny_clip_dir, tmp_path, frames_of):
    videos = tmp_path / "videos"
    for model, subjects in {"original": ("zorbo", "plimka"), "unlearned": ("circle", "plimka")}.items():
        for concept, subject in zip(("zorbo", "plimka"), subjects, strict=True):
            clips = frames_of(subject, 3, video=True, seed=len(concept))
            for i, clip in enumerate(clips):
                (videos / model / concept).mkdir(parents=True, exist_ok=True)
                write_gif(clip, videos / model / concept / f"clip{i}.gif")
    out = tmp_path / "scored"
    # the suite's own detector: TinyWorld's classifier, which sees rendered characters and shapes
    command = [sys.executable, "-m", "t2v_unlearn", "eval", "--videos", str(videos), "--concept", "zorbo",
               "--bootstrap-resamples", "100", "--no-progress", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["paired"] is True and "image" not in metrics
    video = metrics["video"]
    assert set(video["concepts"]) == {"zorbo", "plimka"}
    assert video["concepts"]["zorbo"]["role"] == "target" and video["concepts"]["zorbo"]["frames_per_video"] == 8
    assert video["erasure"]["n"] == 3 and video["retention"]["n"] == 3
    assert video["erasure"]["value"] == 1.0 and video["retention"]["value"] == 1.0  # zorbo became circles
    assert video["erasure"]["low"] < 0.6  # 3 videos: the interval says how little 3 videos can show
    assert (out / "report.html").read_text().count("data:image/gif;base64,") == 6
    assert "wrote" in result.stdout


def test_scoring_one_folder_of_videos_gives_m_scores_only(tiny_clip_dir, tmp_path, frames_of, capsys):
    videos = tmp_path / "clips"
    videos.mkdir()
    for i, clip in enumerate(frames_of("zorbo", 2, video=True)):
        write_gif(clip, videos / f"clip{i}.gif")
    out = tmp_path / "scored"
    argv = ["--videos", str(videos), "--concept", "zorbo", "--detector", str(tiny_clip_dir), "--no-progress",
            "--bootstrap-resamples", "50", "--out", str(out)]  # fmt: skip
    assert run_eval(_parse(argv)) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["paired"] is False and metrics["video"]["erasure"]["value"] is None
    zorbo = metrics["video"]["concepts"]["zorbo"]
    assert zorbo["n_prompts"] == 2 and "unlearned" not in zorbo
    assert 0.0 <= zorbo["original"]["m_score"]["value"] <= 1.0
    assert (
        run_eval(_parse(["--videos", str(tmp_path / "none"), "--concept", "zorbo", "--out", str(tmp_path / "x")])) == 2
    )
    assert "is not a folder" in capsys.readouterr().err
    # m evenly spaced frames of each 8-frame clip
    assert run_eval(_parse([*argv[:-1], str(tmp_path / "three"), "--frames-scored", "3"])) == 0
    three = json.loads((tmp_path / "three" / "metrics.json").read_text())["video"]["concepts"]["zorbo"]
    assert three["frames_per_video"] == 3 and zorbo["frames_per_video"] == 8
    assert run_eval(_parse([*argv[:-1], str(tmp_path / "zero"), "--frames-scored", "0"])) == 2
    assert "--frames-scored must be at least 1" in capsys.readouterr().err and not (tmp_path / "zero").exists()


def test_model_for_each_kind(tmp_path):
    from t2v_unlearn.eval.evaluate import EvalConfig

    for kind in ("image", "video"):
        (tmp_path / "weights" / kind).mkdir(parents=True)
        (tmp_path / "weights" / kind / "model_index.json").write_text("{}")
    weights = tmp_path / "weights"
    # a checkpoint's base_model may name the image pipeline of a TinyWorld-style export: videos use its sibling
    config = EvalConfig(model=str(weights / "image"))
    assert config.model_for("image") == str(weights / "image") and config.model_for("video") == str(weights / "video")
    assert EvalConfig(model=str(weights)).model_for("video") == str(weights / "video")  # a folder holding both
    config = EvalConfig(model="sd21-base", video_model="modelscope")  # registered names pass through
    assert config.model_for("image") == "sd21-base" and config.model_for("video") == "modelscope"


def test_eval_flags_come_from_evalconfig_and_a_saved_config_reruns(tmp_path):
    from dataclasses import asdict

    from t2v_unlearn.commands.eval import config_from_args
    from t2v_unlearn.eval.evaluate import EvalConfig

    parser = add_eval_arguments(argparse.ArgumentParser())
    plain = config_from_args(parser.parse_args(["--text-encoder", "ckpt", "--out", "o"]))
    assert plain == EvalConfig(text_encoder="ckpt")  # every default is EvalConfig's own
    args = parser.parse_args(["--text-encoder", "ckpt", "--concept", "zorbo", "--concept", "star", "--attacks",
                              "synonyms,descriptions", "--sampler", "dpm-solver", "--steps", "12", "--no-decoded",
                              "--out", "o"])  # fmt: skip
    config = config_from_args(args)
    assert config.concepts == ["zorbo", "star"] and config.attacks == ["synonyms", "descriptions"]
    assert (config.sampler, config.steps, config.score_decoded) == ("dpm-solver", 12, False)
    (tmp_path / "eval_config.json").write_text(json.dumps(asdict(config)))
    again = config_from_args(parser.parse_args(["--config", str(tmp_path), "--out", "o"]))
    assert again == config
    assert config_from_args(parser.parse_args(["--config", str(tmp_path), "--seed", "3", "--out", "o"])).seed == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["--text-encoder", "ckpt", "--sampler", "euler", "--out", "o"])


def test_eval_measures_the_animatediff_transfer_in_the_same_report(image_pipe, checkpoint, tmp_path, capsys):
    """`--kind all`: the one checkpoint through the image, ModelScope-style and AnimateDiff pipelines."""
    from t2v_unlearn.encoders import fingerprint

    folder = tmp_path / "tinyworld-ckpt"  # TinyWorld's encoder with its feed-forward weights perturbed
    unlearned = type(image_pipe.text_encoder)(image_pipe.text_encoder.config)
    unlearned.load_state_dict(image_pipe.text_encoder.state_dict())
    with torch.no_grad():
        for name, parameter in unlearned.named_parameters():
            if "mlp" in name:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)))
    unlearned.save_pretrained(folder / "text_encoder")
    manifest = {
        "concepts": ["zorbo"],
        "base_model": "tinyworld",
        "base_fingerprint": fingerprint.encoder_fingerprint(image_pipe.text_encoder),
        "base_architecture": fingerprint.architecture(image_pipe.text_encoder.config),
        "tokenizer_fingerprint": fingerprint.tokenizer_fingerprint(image_pipe.tokenizer),
    }
    (folder / "unlearn.json").write_text(json.dumps(manifest))
    out = tmp_path / "results"
    argv = ["--text-encoder", str(folder), "--quick", "--kind", "all", "--steps", "2", "--num-frames", "3",
            "--no-decoded", "--bootstrap-resamples", "200", "--no-progress", "--out", str(out)]  # fmt: skip
    assert run_eval(_parse(argv)) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"] == {"image": "tinyworld", "video": "tinyworld", "animatediff": "tinyworld-animatediff"}
    for kind in ("image", "video", "animatediff"):
        assert set(metrics[kind]["erasure"]) == {"value", "low", "high", "n"}
    assert metrics["animatediff"]["concepts"]["zorbo"]["frames_per_video"] == 3
    assert (out / "samples" / "animatediff" / "original" / "zorbo" / "p00_s0.npy").is_file()
    assert "AnimateDiff videos" in (out / "report.html").read_text()
    assert "animatediff:" in capsys.readouterr().out
    # a base without a known AnimateDiff sibling: a clear error naming the flag
    argv = [
        "--text-encoder",
        str(checkpoint),
        "--quick",
        "--kind",
        "animatediff",
        "--suite",
        "tinyworld",
        "--out",
        str(tmp_path / "other"),
    ]
    assert run_eval(_parse(argv)) == 2
    assert "--animatediff-model" in capsys.readouterr().err


def test_more_seeds_per_prompt_narrow_the_plan(checkpoint, tiny_clip_dir, tmp_path, capsys):
    out = tmp_path / "seeds"
    argv = ["--text-encoder", str(checkpoint), "--quick", "--kind", "image", "--seeds", "3", "--steps", "2",
            "--suite", "tinyworld", "--detector", str(tiny_clip_dir), "--bootstrap-resamples", "50", "--no-progress",
            "--out", str(out)]  # fmt: skip
    assert run_eval(_parse(argv)) == 0, capsys.readouterr().err
    zorbo = json.loads((out / "metrics.json").read_text())["image"]["concepts"]["zorbo"]
    assert zorbo["n_seeds"] == 3 and zorbo["n_prompts"] == 4  # the quick plan's prompts, 3 seeds each
    assert (out / "samples/image/original/zorbo/p00_s2.npy").is_file()
    with pytest.raises(ValueError, match="--seeds must be at least 1"):
        EvalConfig(seeds=0)
    for bound in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="--attack-max-norm must be positive"):
            EvalConfig(attack_max_norm=bound)
