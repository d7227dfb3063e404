"""Exports for A1111, ComfyUI and diffusers' LoRA loader: exact round trips, real key layouts, the CLI once."""

import copy
import json
import subprocess
import sys

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from t2v_unlearn.commands import main
from t2v_unlearn.encoders import EraseConfig, EraseResult, save_checkpoint
from t2v_unlearn.encoders.export import (
    SD1_PREFIX,
    SD2_PREFIX,
    canonical_names,
    checkpoint_layout,
    choose_layout,
    export_checkpoint,
    format_summary,
    from_ldm_sd1,
    from_openclip,
    lora_from_delta,
    merge_into_checkpoint,
    to_ldm_sd1,
    to_openclip,
)
from t2v_unlearn.encoders.prompts import ConceptSpec
from t2v_unlearn.pipelines import tinyworld_path
from t2v_unlearn.pipelines.registry import CLIP_L14_TEXT, OPENCLIP_H14_TEXT
from t2v_unlearn.pipelines.standins import standin_text_encoder

PROMPTS = ["a picture of zorbo", "a star in dotted style", ""]
RANK2 = ["encoder.layers.1.mlp.fc1.weight", "encoder.layers.3.self_attn.v_proj.weight"]


def _tinyworld_encoder() -> CLIPTextModel:
    return CLIPTextModel.from_pretrained(tinyworld_path("image") / "text_encoder", dtype=torch.float32).eval()


def _hidden(encoder, tokenizer):
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids)[0]


def _rank2_edit(encoder: CLIPTextModel, names=RANK2, bias: str | None = None) -> CLIPTextModel:
    """A copy whose change from `encoder` is a rank-2 matrix on each named weight (and a shifted `bias`)."""
    edited = copy.deepcopy(encoder)
    generator = torch.Generator().manual_seed(0)
    parameters = dict(edited.named_parameters())
    with torch.no_grad():
        for name in names:
            rows, cols = parameters[name].shape
            u, v = torch.randn(rows, 2, generator=generator), torch.randn(2, cols, generator=generator)
            parameters[name] += 0.02 * u @ v
        if bias is not None:
            parameters[bias] += 0.1
    return edited


def _assert_same(actual: dict, expected: dict):
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


# --- the layouts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["tinyworld", "sd-1.5", "sd-2.1-base"])
def test_every_tensor_survives_both_layouts_and_back(source):
    encoder = _tinyworld_encoder() if source == "tinyworld" else standin_text_encoder(source, scale="reduced")
    state, config = encoder.state_dict(), encoder.config
    expected = canonical_names(state)
    _assert_same(from_openclip(to_openclip(state, config), config), expected)
    _assert_same(from_ldm_sd1(to_ldm_sd1(state, config), config), expected)
    # the back-converted tensors load into a plain CLIPTextModel under its own (transformers 5) names
    plain = CLIPTextModel(config)
    plain.load_state_dict({k.removeprefix("text_model."): v for k, v in from_openclip(to_openclip(state, config),
                                                                                      config).items()})  # fmt: skip
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in state.items())


def test_layout_follows_the_activation_and_can_be_overridden():
    assert choose_layout(standin_text_encoder("sd-1.5", scale="reduced").config) == "sd1"  # quick_gelu: OpenAI CLIP
    assert choose_layout(standin_text_encoder("sd-2.1-base", scale="reduced").config) == "sd2"  # gelu: OpenCLIP
    assert choose_layout(_tinyworld_encoder().config) == "sd2"
    assert choose_layout(_tinyworld_encoder().config, "sd1") == "sd1"
    with pytest.raises(ValueError, match="--layout sd1 or --layout sd2"):
        choose_layout({"hidden_act": "relu"})


def test_fused_in_proj_is_q_k_v_concatenated():
    encoder = _tinyworld_encoder()
    state, openclip = encoder.state_dict(), to_openclip(encoder.state_dict(), encoder.config)
    for layer in range(encoder.config.num_hidden_layers):
        for kind in ("weight", "bias"):
            parts = [state[f"encoder.layers.{layer}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
            assert torch.equal(openclip[f"{SD2_PREFIX}transformer.resblocks.{layer}.attn.in_proj_{kind}"],
                               torch.cat(parts))  # fmt: skip
    assert torch.equal(openclip[SD2_PREFIX + "positional_embedding"], state["embeddings.position_embedding.weight"])


def test_real_shapes_give_the_original_checkpoint_keys():
    with torch.device("meta"):  # shapes only: no memory, no time
        sd2 = CLIPTextModel(CLIPTextConfig(**OPENCLIP_H14_TEXT))
        sd1 = CLIPTextModel(CLIPTextConfig(**CLIP_L14_TEXT))
    openclip = to_openclip(sd2.state_dict(), sd2.config)
    assert len(openclip) == 4 + 23 * 12 and all(k.startswith(SD2_PREFIX) for k in openclip)
    assert openclip[f"{SD2_PREFIX}transformer.resblocks.22.attn.in_proj_weight"].shape == (3 * 1024, 1024)
    assert openclip[f"{SD2_PREFIX}transformer.resblocks.22.mlp.c_fc.weight"].shape == (4096, 1024)
    assert openclip[f"{SD2_PREFIX}token_embedding.weight"].shape == (49408, 1024)
    assert openclip[f"{SD2_PREFIX}positional_embedding"].shape == (77, 1024)
    assert not any(".resblocks.23." in k or "text_projection" in k or "logit_scale" in k for k in openclip)
    ldm = to_ldm_sd1(sd1.state_dict(), sd1.config)
    assert ldm[f"{SD1_PREFIX}text_model.encoder.layers.11.mlp.fc1.weight"].shape == (3072, 768)
    assert checkpoint_layout(openclip) == "sd2" and checkpoint_layout(ldm) == "sd1"


def test_from_openclip_reads_an_original_checkpoint_and_drops_what_diffusers_lacks():
    encoder = standin_text_encoder("sd-2.1-base", scale="reduced")
    config, width = encoder.config, encoder.config.hidden_size
    original = to_openclip(encoder.state_dict(), config)
    last = config.num_hidden_layers  # the 24th layer of SD 2.x, dropped by diffusers
    original |= {f"{SD2_PREFIX}transformer.resblocks.{last}.ln_1.weight": torch.ones(width),
                 f"{SD2_PREFIX}text_projection": torch.eye(width), f"{SD2_PREFIX}logit_scale": torch.tensor(4.6),
                 "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}  # fmt: skip
    _assert_same(from_openclip(original, config), canonical_names(encoder.state_dict()))


def test_malformed_state_dicts_are_refused_by_name():
    encoder = _tinyworld_encoder()
    state = encoder.state_dict()
    with pytest.raises(ValueError, match="'visual.proj'.*CLIPTextModel"):
        to_openclip(state | {"visual.proj": torch.zeros(1)}, encoder.config)
    openclip = to_openclip(state, encoder.config)
    del openclip[f"{SD2_PREFIX}transformer.resblocks.2.mlp.c_fc.bias"]
    with pytest.raises(ValueError, match="lacks.*layer 2 mlp.fc1.bias"):
        from_openclip(openclip, encoder.config)
    with pytest.raises(ValueError, match="layers"):
        to_ldm_sd1(state, encoder.config.to_dict() | {"num_hidden_layers": 12})


def test_merge_replaces_the_text_encoder_and_keeps_everything_else():
    base, edited = _tinyworld_encoder(), _rank2_edit(_tinyworld_encoder())
    extra = {"model.diffusion_model.out.2.weight": torch.randn(4, 3), f"{SD2_PREFIX}logit_scale": torch.tensor(4.6),
             f"{SD2_PREFIX}transformer.resblocks.4.ln_1.weight": torch.ones(128)}  # fmt: skip
    checkpoint = to_openclip(base.state_dict(), base.config) | extra
    exported = to_openclip(edited.state_dict(), edited.config)
    merged = merge_into_checkpoint(checkpoint, exported)
    _assert_same({k: merged[k] for k in exported}, exported)
    _assert_same({k: merged[k] for k in extra}, extra)
    assert merged.keys() == checkpoint.keys()
    with pytest.raises(ValueError, match="no tensor"):
        merge_into_checkpoint(to_ldm_sd1(base.state_dict(), base.config), exported)
    wider = standin_text_encoder("sd-2.1-base", scale="reduced")
    with pytest.raises(ValueError, match="shape"):
        merge_into_checkpoint(to_openclip(wider.state_dict(), wider.config), exported)


# --- LoRA from a delta -------------------------------------------------------------------------------------


def test_lora_from_a_rank2_delta_is_exact_and_loads_with_diffusers(tmp_path, image_pipe):
    base = _tinyworld_encoder()
    edited = _rank2_edit(base, bias="encoder.layers.0.mlp.fc2.bias")
    lora, report = lora_from_delta(base.state_dict(), edited.state_dict(), rank=2)
    assert report["modules"] == 2 and report["relative_error"] < 1e-5
    assert report["not_carried"] == ["text_model.encoder.layers.0.mlp.fc2.bias"] and report["not_carried_share"] > 0
    for name in RANK2:
        module = "text_encoder.text_model." + name.removesuffix(".weight")
        up, down = lora[f"{module}.lora_B.weight"], lora[f"{module}.lora_A.weight"]
        assert up.shape[1] == down.shape[0] == 2
        delta = edited.state_dict()[name] - base.state_dict()[name]
        assert torch.allclose(up @ down, delta, atol=1e-6, rtol=0)

    weights_only = _rank2_edit(base)  # a LoRA carries weights only: this encoder is what it reproduces
    lora, report = lora_from_delta(base.state_dict(), weights_only.state_dict(), rank=8)
    assert report["not_carried"] == [] and report["relative_error_all"] < 1e-5
    save_file(lora, str(tmp_path / "pytorch_lora_weights.safetensors"))
    pipe = StableDiffusionPipeline.from_pretrained(tinyworld_path("image"), dtype=torch.float32)
    pipe.load_lora_weights(tmp_path)
    expected = _hidden(weights_only, image_pipe.tokenizer)
    assert not torch.allclose(expected, _hidden(base, image_pipe.tokenizer), atol=1e-3)
    assert torch.allclose(_hidden(pipe.text_encoder, pipe.tokenizer), expected, atol=1e-4)


# --- checkpoints, files and the command line ---------------------------------------------------------------


def _save(folder, image_pipe, encoder, changed, lora_state_dict=None):
    concept = ConceptSpec(name="zorbo", category="id", prompts=("a picture of zorbo",))
    config = EraseConfig(trainable="lora" if lora_state_dict else "ffn+last-attn")
    result = EraseResult(text_encoder=encoder, concepts=[concept], steps=0, stopped_by="max-steps", history=[],
                         timings={}, changed_parameters=changed, lora_state_dict=lora_state_dict)  # fmt: skip
    return save_checkpoint(folder, result, image_pipe.text_encoder, image_pipe.tokenizer, config, "tinyworld", {})


@pytest.fixture(scope="module")
def checkpoint(image_pipe, tmp_path_factory):
    """A TinyWorld encoder checkpoint whose change is rank 2 on two weights (made in a second, no training)."""
    folder = tmp_path_factory.mktemp("export") / "zorbo"
    return _save(folder, image_pipe, _rank2_edit(image_pipe.text_encoder), RANK2)


def test_a1111_and_comfyui_files_hold_the_encoder_under_their_keys(checkpoint, tmp_path):
    state = canonical_names(CLIPTextModel.from_pretrained(checkpoint, subfolder="text_encoder").state_dict())
    summary = export_checkpoint(checkpoint, "a1111", tmp_path / "a1111")
    a1111 = load_file(str(tmp_path / "a1111" / "a1111_text_encoder.safetensors"))
    assert summary["layout"] == "sd2" and all(k.startswith(SD2_PREFIX) for k in a1111)
    config = json.loads((checkpoint / "text_encoder" / "config.json").read_text())
    _assert_same(from_openclip(a1111, config), state)
    assert "Checkpoint Merger" in format_summary(summary)
    assert "Weighted sum" in (tmp_path / "a1111" / "README.md").read_text()

    export_checkpoint(checkpoint, "a1111", tmp_path / "a1111-sd1", layout="sd1")
    sd1 = load_file(str(tmp_path / "a1111-sd1" / "a1111_text_encoder.safetensors"))
    assert all(k.startswith(SD1_PREFIX + "text_model.") for k in sd1)

    summary = export_checkpoint(checkpoint, "comfyui", tmp_path / "comfyui")
    comfy = load_file(str(tmp_path / "comfyui" / "comfyui_text_encoder.safetensors"))
    _assert_same(comfy, state)
    assert all(k.startswith("text_model.") for k in comfy)
    assert any("ComfyUI cannot load it" in note for note in summary["notes"])  # TinyWorld's shape is no SD's
    assert json.loads((tmp_path / "comfyui" / "export.json").read_text())["concepts"] == ["zorbo"]


def test_merge_into_writes_a_full_checkpoint_and_checks_its_base(checkpoint, image_pipe, tmp_path):
    base = image_pipe.text_encoder
    unet = {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3)}
    save_file(to_openclip(base.state_dict(), base.config) | unet, str(tmp_path / "base.safetensors"))
    export_checkpoint(checkpoint, "a1111", tmp_path / "merged", merge_into=tmp_path / "base.safetensors")
    merged = load_file(str(tmp_path / "merged" / "a1111_checkpoint.safetensors"))
    encoder = CLIPTextModel.from_pretrained(checkpoint, subfolder="text_encoder")
    _assert_same({k: merged[k] for k in unet}, unet)
    _assert_same(from_openclip(merged, encoder.config), canonical_names(encoder.state_dict()))

    other = _rank2_edit(base, names=["encoder.layers.0.mlp.fc2.weight"])  # a fine-tune with another encoder
    save_file(to_openclip(other.state_dict(), other.config) | unet, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not the one the checkpoint was unlearned from.*--force"):
        export_checkpoint(checkpoint, "a1111", tmp_path / "refused", merge_into=tmp_path / "other.safetensors")
    assert not (tmp_path / "refused").exists()
    export_checkpoint(checkpoint, "a1111", tmp_path / "forced", merge_into=tmp_path / "other.safetensors", force=True)
    save_file(to_ldm_sd1(base.state_dict(), base.config), str(tmp_path / "sd1.safetensors"))
    with pytest.raises(ValueError, match="SD1 checkpoint"):
        export_checkpoint(checkpoint, "a1111", tmp_path / "sd1", merge_into=tmp_path / "sd1.safetensors")


def test_a_trained_lora_is_copied_under_the_canonical_names(image_pipe, tmp_path):
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["fc1"])
    model = get_peft_model(copy.deepcopy(image_pipe.text_encoder), config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.01)
    lora_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    encoder = model.merge_and_unload()
    base = image_pipe.text_encoder.state_dict()
    changed = [n for n, t in encoder.state_dict().items() if not torch.equal(t, base[n])]
    folder = _save(tmp_path / "lora-ckpt", image_pipe, encoder, changed, lora_state)
    summary = export_checkpoint(folder, "diffusers-lora", tmp_path / "lora")
    exported = load_file(str(tmp_path / "lora" / "pytorch_lora_weights.safetensors"))
    saved = load_file(str(folder / "lora" / "pytorch_lora_weights.safetensors"))
    assert "copied" in summary["lora"]["source"] and summary["lora"]["rank"] == 4
    assert all(k.startswith("text_encoder.text_model.encoder.layers.") for k in exported)
    _assert_same(exported, {k.replace("text_encoder.", "text_encoder.text_model.", 1) if "text_model." not in k
                            else k: v for k, v in saved.items()})  # fmt: skip


def test_the_cli_exports_a_lora_from_the_delta(checkpoint, tmp_path, image_pipe):
    out = tmp_path / "lora"
    result = subprocess.run([sys.executable, "-m", "t2v_unlearn", "export", str(checkpoint), "--format",
                             "diffusers-lora", "--out", str(out), "--rank", "4"], capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "relative error of the weight delta" in result.stdout and "how to load it" in result.stdout
    report = json.loads((out / "export.json").read_text())["lora"]
    assert report["modules"] == 2 and report["relative_error"] < 1e-5 and report["not_carried"] == []
    lora = load_file(str(out / "pytorch_lora_weights.safetensors"))
    assert sorted(lora) == sorted(f"text_encoder.text_model.{n.removesuffix('.weight')}.lora_{ab}.weight"
                                  for n in RANK2 for ab in "AB")  # fmt: skip
    pipe = StableDiffusionPipeline.from_pretrained(tinyworld_path("image"), dtype=torch.float32)
    pipe.load_lora_weights(out)
    unlearned = CLIPTextModel.from_pretrained(checkpoint, subfolder="text_encoder")
    assert torch.allclose(_hidden(pipe.text_encoder, pipe.tokenizer), _hidden(unlearned, image_pipe.tokenizer),
                          atol=1e-4)  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "{tmp}", "--format", "comfyui", "--out", "{tmp}/out"], "not an encoder checkpoint"),
        (["export", "{ckpt}", "--format", "comfyui", "--out", "{ckpt}"], "already exists"),
        (["export", "{ckpt}", "--format", "comfyui", "--merge-into", "x.safetensors", "--out", "{tmp}/o"], "a1111"),
        (
            ["export", "{ckpt}", "--format", "a1111", "--merge-into", "{tmp}/x.safetensors", "--out", "{tmp}/o"],
            "exist",
        ),
    ],
)
def test_bad_input_exits_2_with_an_error_line(checkpoint, tmp_path, capsys, args, message):
    argv = [a.format(tmp=tmp_path, ckpt=checkpoint) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "out").exists()


def test_an_unknown_format_is_an_argparse_error(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(checkpoint), "--format", "invokeai", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --format: invalid choice: 'invokeai'" in err and "Traceback" not in err
