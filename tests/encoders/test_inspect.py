import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from t2v_unlearn.commands import main
from t2v_unlearn.encoders import EraseConfig, erase_concept, save_checkpoint
from t2v_unlearn.encoders.inspect import (
    compare_encoders,
    describe,
    exit_status,
    format_report,
    inspect_sources,
    resolve_source,
)
from t2v_unlearn.pipelines.load import ModelNotFoundError
from t2v_unlearn.pipelines.standins import build_standin, save_standin

FAST = dict(num_shots=2, shot_steps=2, max_steps=2, check_every=2, stop_rule="max-steps", batch_size=2)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Reduced stand-ins saved as pipeline folders, and a checkpoint unlearned on the image one."""
    root = tmp_path_factory.mktemp("standins")
    image = build_standin("sd-2.1-base", scale="reduced")
    paths = {"image": save_standin(image, root / "image")}
    paths["video"] = save_standin(
        build_standin("modelscope-1.7b", scale="reduced", seed=3, encoder_seed=0), root / "video"
    )
    paths["other"] = save_standin(build_standin("zeroscope-v2-576w", scale="reduced", encoder_seed=1), root / "other")
    paths["sd15"] = save_standin(build_standin("sd-1.5", scale="reduced"), root / "sd15")
    config = EraseConfig(**FAST)
    result = erase_concept(image, ["snoopy"], config, progress=False)
    paths["checkpoint"] = save_checkpoint(root / "erased-snoopy", result, image.text_encoder, image.tokenizer, config,
                                          "sd-2.1-base", {})  # fmt: skip
    return {name: str(path) for name, path in paths.items()}


def _inspect(*arguments):
    return inspect_sources(*(resolve_source(a) for a in arguments))


# --- shared encoders ----------------------------------------------------------------------------------------------


def test_tinyworld_image_and_video_share_their_encoder():
    report = _inspect("tinyworld", "tinyworld:video")
    image, video = report["inputs"]
    assert (image["pipeline_class"], video["pipeline_class"]) == ("StableDiffusionPipeline", "TextToVideoSDPipeline")
    assert image["fingerprint"] == video["fingerprint"] and len(image["fingerprint"]) == 64
    assert image["tokenizer"]["pad_token"] == "!" and image["parameters"] > 0
    assert report["answer"]["shared"] is True and report["answer"]["encoders"]["bitwise_identical"]
    assert exit_status(report) == 0


def test_image_and_video_standins_share_an_encoder(folders):
    report = _inspect(folders["image"], folders["video"])
    assert report["answer"]["shared"] is True
    assert report["inputs"][0]["encoder_family"] == report["inputs"][1]["encoder_family"] is None  # reduced shapes
    assert any("random stand-in of sd-2.1-base" in note for note in report["inputs"][0]["notes"])


def test_other_weights_name_the_first_differing_tensor(folders):
    report = _inspect(folders["image"], folders["other"])
    answer = report["answer"]
    assert answer["shared"] is False and answer["encoders"]["same_architecture"]
    assert answer["encoders"]["first_difference"]["tensor"].endswith("embeddings.token_embedding.weight")
    assert answer["encoders"]["max_abs_difference"] > 0
    assert "other weights" in answer["reason"] and exit_status(report) == 1
    assert "first differing tensor: " + answer["encoders"]["first_difference"]["tensor"] in format_report(report)


def test_compare_encoders_pinpoints_one_changed_tensor(folders):
    encoder = resolve_source(folders["image"]).text_encoder
    changed = copy.deepcopy(encoder)
    name = next(n for n, _ in changed.named_parameters() if n.endswith("layers.1.mlp.fc1.weight"))
    with torch.no_grad():
        changed.get_parameter(name)[0, 0] += 0.5
    result = compare_encoders(encoder, changed)
    assert result["differing_tensors"] == 1 and not result["identical"]
    assert result["first_difference"]["tensor"] == name
    assert result["max_abs_difference"] == pytest.approx(0.5, abs=1e-6)
    # the same weights stored at fp16 are the same encoder (as SD 2.1 fp32 and ModelScope fp16), not bitwise
    rounded = copy.deepcopy(encoder).half().float()
    same = compare_encoders(encoder, rounded)
    assert same["identical"] and not same["bitwise_identical"] and 0 < same["max_abs_difference"] < 1e-2


def test_sd1_and_sd2_architectures_differ(folders):
    answer = _inspect(folders["sd15"], folders["image"])["answer"]
    assert answer["shared"] is False and "hidden_size 48 vs 64" in answer["reason"]


# --- checkpoints ----------------------------------------------------------------------------------------------


def test_checkpoint_is_described(folders):
    item = describe(resolve_source(folders["checkpoint"]))
    assert item["source"] == "checkpoint" and item["checkpoint"]["concepts"] == ["snoopy"]
    assert item["checkpoint"]["base_model"] == "sd-2.1-base" and item["checkpoint"]["changed_parameters"] > 0
    assert item["fingerprint"] == item["checkpoint"]["unlearned_fingerprint"]


def test_checkpoint_fits_its_base_and_the_video_model(folders):
    for base in ("image", "video"):
        answer = _inspect(folders["checkpoint"], folders[base])["answer"]
        assert answer["question"] == "checkpoint_fits" and answer["fits"] is True, answer["reason"]
    reverse = _inspect(folders["video"], folders["checkpoint"])["answer"]  # order does not matter
    assert reverse["fits"] is True


def test_checkpoint_refused_by_other_weights_and_other_architecture(folders):
    other = _inspect(folders["checkpoint"], folders["other"])["answer"]
    assert other["fits"] is False and other["fits_with_force"] is True and "--force" in other["reason"]
    sd15 = _inspect(folders["checkpoint"], folders["sd15"])["answer"]
    assert sd15["fits"] is False and sd15["fits_with_force"] is False and "hidden_size 64 vs 48" in sd15["reason"]
    tinyworld = _inspect(folders["checkpoint"], "tinyworld")["answer"]
    assert tinyworld["fits"] is False and "does not fit tinyworld" in tinyworld["reason"]


# --- registered bases that are not downloaded -------------------------------------------------------------------


def test_registered_bases_without_weights_are_described_from_config(tmp_path, monkeypatch, folders):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    report = _inspect("sd-1.5", "modelscope-1.7b")
    sd15, modelscope = report["inputs"]
    assert sd15["source"] == "registered" and sd15["fingerprint"] is None
    assert sd15["parameters"] == 123_060_480 and modelscope["parameters"] == 340_387_840
    assert modelscope["tokenizer"]["pad_token"] == "!" and "hf download damo-vilab" in modelscope["notes"][0]
    assert report["answer"]["shared"] is False and "hidden_size 768 vs 1024" in report["answer"]["reason"]
    unknown = _inspect("sd-2.1-base", "zeroscope-v2-576w")["answer"]
    assert unknown["shared"] is None and exit_status({"answer": unknown}) == 0
    assert _inspect(folders["checkpoint"], "modelscope-1.7b")["answer"]["fits"] is False  # reduced vs real width


def test_downloaded_registered_bases_are_compared_tensor_by_tensor(tmp_path, monkeypatch):
    # a Hugging Face cache holding reduced stand-ins under the real repo ids (ModelScope under its alias)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    commit = "f" * 40
    for repo_id, name in (("stabilityai/stable-diffusion-2-1-base", "sd-2.1-base"),
                          ("ali-vilab/text-to-video-ms-1.7b", "modelscope-1.7b")):  # fmt: skip
        repo = tmp_path / ("models--" + repo_id.replace("/", "--"))
        save_standin(build_standin(name, scale="reduced"), repo / "snapshots" / commit)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    report = _inspect("sd-2.1-base", "modelscope-1.7b")
    image, video = report["inputs"]
    assert image["source"] == video["source"] == "pipeline"
    assert image["registered"]["repo_id"] == "stabilityai/stable-diffusion-2-1-base"
    assert video["registered"]["kinds"] == ["video"] and video["path"].endswith(commit)
    assert report["answer"]["shared"] is True and report["answer"]["tokenizers_identical"] is True


# --- the command --------------------------------------------------------------------------------------------------


def test_cli_inspect_json_end_to_end():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "t2v_unlearn", "inspect", "tinyworld", "tinyworld:video", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["answer"]["shared"] is True and len(report["inputs"]) == 2


def test_cli_inspect_text_and_exit_status(folders, capsys):
    assert main(["inspect", folders["checkpoint"], folders["other"]]) == 1
    out = capsys.readouterr().out
    assert "checkpoint fits: no" in out and "--force would swap it in" in out and "erased        snoopy" in out
    assert main(["inspect", folders["image"]]) == 0
    assert "fingerprint" in capsys.readouterr().out


def test_bad_inputs_are_named(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="neither a diffusers pipeline"):
        resolve_source(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="registered base"):
        resolve_source("no-such-model")
    assert main(["inspect", "sd-1.5:video"]) == 2
    assert "For video use animatediff-sd-1.5" in capsys.readouterr().err
