import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel

from t2v_unlearn.pipelines import tinyworld_path
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy
from t2v_unlearn.tinyworld.train import evaluator_batch, main, parse_args


def _named_label(text: str) -> str | None:
    """The label an attribute caption names, or None for a full caption."""
    for templates in load_taxonomy().detector_templates.values():
        for template in templates:
            prefix, suffix = template.split("{label}")
            if text.startswith(prefix) and text.endswith(suffix):
                label = text[len(prefix) : len(text) - len(suffix)]
                if " " not in label:
                    return label
    return None


def test_an_attribute_caption_is_true_of_every_image_with_that_attribute():
    pixels, captions, true_of = evaluator_batch(3, 64)
    assert pixels.shape == (64, 3, 64, 64) and true_of.shape == (64, 64)
    assert torch.all(true_of.diagonal() == 1)
    labels = [_named_label(c) for c in captions]
    pairs = [(i, j) for i in range(64) for j in range(64)
             if i < j and labels[i] and labels[i] == labels[j] and captions[i] != captions[j]]  # fmt: skip
    assert pairs, "no two wordings of one attribute in the batch"
    for i, j in pairs:  # two wordings of one attribute are true of the same images, both of them included
        assert torch.equal(true_of[:, i], true_of[:, j]) and true_of[i, j] == 1 and true_of[j, i] == 1
    named = [j for j, label in enumerate(labels) if label]
    assert true_of[:, named].sum(0).float().mean() > 3  # each is true of several images, not its own only


def test_evaluator_fine_tuning_starts_from_the_given_weights(tmp_path):
    shutil.copytree(tinyworld_path("evaluator"), tmp_path / "tokenizer")  # a folder the tokenizer loads from
    main(["--work", str(tmp_path), "--stages", "evaluator", "--evaluator-steps", "2", "--device", "cpu",
          "--evaluator-init", str(tinyworld_path("evaluator")), "--threads", "1"])  # fmt: skip
    before = CLIPModel.from_pretrained(tinyworld_path("evaluator"), dtype=torch.float32).state_dict()
    after = load_file(str(tmp_path / "evaluator" / "final" / "model.safetensors"))
    assert after.keys() <= before.keys()
    assert any(not torch.allclose(after[k].float(), before[k]) for k in after)  # it trained
    assert (tmp_path / "evaluator" / "DONE").exists()


def test_classifier_fine_tuning_starts_from_the_given_weights_and_learns_blobs(tmp_path):
    shutil.copytree(tinyworld_path("image") / "tokenizer", tmp_path / "tokenizer")
    shutil.copytree(tinyworld_path("image") / "vae", tmp_path / "vae" / "final")  # the stage reads the VAE here
    main(["--work", str(tmp_path), "--stages", "classifier", "--classifier-steps", "2", "--device", "cpu",
          "--classifier-init", str(tinyworld_path("classifier")), "--classifier-lr", "1e-4",
          "--classifier-blob-share", "0.5", "--classifier-blob-kind", "lumpy", "--classifier-blob-waver", "0.2",
          "0.3", "--classifier-waver-share", "0.5", "--classifier-batch-size", "8", "--threads", "1",
          "--no-bf16"])  # fmt: skip
    recorded = json.loads((tmp_path / "record.json").read_text())["config"]
    assert recorded["classifier_blob_kind"] == "lumpy" and recorded["classifier_waver_share"] == 0.5
    assert list(recorded["classifier_blob_waver"]) == [0.2, 0.3]
    before = load_file(str(tinyworld_path("classifier") / "model.safetensors"))
    after = load_file(str(tmp_path / "classifier" / "final" / "model.safetensors"))
    assert after.keys() == before.keys()
    weights = [k for k in after if after[k].is_floating_point() and "running" not in k]  # not BatchNorm's statistics
    changed = [k for k in weights if not torch.equal(after[k], before[k])]
    # two small steps from the shipped weights, not a fresh network: every weight moved a little at most
    assert changed and all((after[k] - before[k]).abs().max() < 0.05 for k in changed)


def test_remapped_text_encoder_keeps_rows_of_shared_tokens(tmp_path):
    from transformers import CLIPTextModel, CLIPTokenizer

    from t2v_unlearn.tinyworld.render import LANGUAGE_V2
    from t2v_unlearn.tinyworld.tokenizer import build_tokenizer
    from t2v_unlearn.tinyworld.train import caption_corpus, remap_text_encoder

    old_tokenizer = CLIPTokenizer.from_pretrained(tinyworld_path("image") / "tokenizer")
    old = CLIPTextModel.from_pretrained(tinyworld_path("image") / "text_encoder", dtype=torch.float32)
    tokenizer = build_tokenizer(tmp_path, caption_corpus(LANGUAGE_V2, count=2000))
    new, kept = remap_text_encoder(old, old_tokenizer, tokenizer)
    assert 0 < kept < len(tokenizer) and new.config.vocab_size == len(tokenizer)
    old_ids, new_ids = old_tokenizer("a picture of zorbo").input_ids, tokenizer("a picture of zorbo").input_ids
    assert old_ids == [old_tokenizer.convert_tokens_to_ids(t) for t in tokenizer.convert_ids_to_tokens(new_ids)]
    with torch.no_grad():  # same tokens, same encoding
        torch.testing.assert_close(new(torch.tensor([new_ids]))[0], old(torch.tensor([old_ids]))[0])


def test_training_config_round_trips_through_training_json(tmp_path):
    from t2v_unlearn.tinyworld.train import RECORDED

    args = parse_args(["--image-steps", "7", "--language", "v1", "--image-lr", "1e-4", "--seed", "3"])
    recorded = {"config": {k: v for k, v in vars(args).items() if k not in RECORDED}}
    (tmp_path / "training.json").write_text(__import__("json").dumps(recorded))
    again = parse_args(["--config", str(tmp_path / "training.json")])
    assert {k: v for k, v in vars(again).items() if k not in RECORDED} == recorded["config"]
    assert parse_args(["--config", str(tmp_path / "training.json"), "--seed", "4"]).seed == 4  # flags still win


def test_the_shipped_training_json_records_its_configuration():

    path = tinyworld_path("image").parent / "training.json"
    args = parse_args(["--config", str(path)])
    record = json.loads(path.read_text())
    assert args.image_steps == record["config"]["image_steps"] == record["image"]["steps"]


def test_a_resumed_stage_continues_the_same_batches_and_weights(tmp_path):
    """Two steps, then two more after a restart, end where four uninterrupted steps end (EMA and schedule too)."""
    from t2v_unlearn.tinyworld.train import Trainer

    def run(work, steps, stop=None):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        trainer = Trainer("toy", work, {"m": model}, model.parameters(), steps, 1e-2, checkpoint_every=2)

        def step(i):
            g = torch.Generator().manual_seed(i)  # the batch is a function of the step, as in the real stages
            x = torch.randn(8, 4, generator=g)
            return ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()

        if stop:
            trainer.steps = stop
        trainer.run(step)
        return model.weight.detach().clone(), trainer

    straight, _ = run(tmp_path / "a", 4)
    run(tmp_path / "b", 4, stop=2)
    resumed, trainer = run(tmp_path / "b", 4)
    assert trainer.ema.optimization_step == 4
    torch.testing.assert_close(resumed, straight)


def test_a_warm_start_continues_the_shipped_models_and_records_its_recipe(tmp_path):

    from diffusers import UNet2DConditionModel

    weights = tinyworld_path("image").parent
    # a work folder copied from an earlier run: its record names that run's source, which this run must replace
    (tmp_path / "record.json").write_text(json.dumps({"initialised_from": {"folder": "elsewhere", "commit": "old"}}))
    main(["--work", str(tmp_path), "--stages", "tokenizer,vae,image,classifier", "--init-from", str(weights),
          "--image-steps", "1", "--batch-size", "2", "--device", "cpu", "--threads", "1"])  # fmt: skip
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["config"]["init_from"] == str(weights) and record["config"]["language"] == "v2"
    assert record["initialised_from"]["folder"] == str(weights)
    assert record["vae"]["copied_from"].endswith("vae") and (tmp_path / "classifier" / "COPIED").exists()
    shipped = UNet2DConditionModel.from_pretrained(weights / "image" / "unet", dtype=torch.float32).state_dict()
    trained = UNet2DConditionModel.from_pretrained(tmp_path / "image" / "unet").state_dict()
    # one step at a small learning rate from the shipped UNet: close to it, not a fresh random one
    assert max((trained[k] - shipped[k]).abs().max().item() for k in shipped) < 0.05


def test_freeze_unet_trains_only_the_focus_rows(tmp_path):
    """`--focus-rows --freeze-unet`: the UNet comes out bit for bit as shipped and only the focus words' rows move,
    so every prompt without them samples exactly as before; without --focus-rows it refuses to start."""

    from diffusers import UNet2DConditionModel

    weights = tinyworld_path("image").parent
    main(["--work", str(tmp_path), "--stages", "tokenizer,vae,image", "--init-from", str(weights), "--image-steps",
          "2", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--focus", "star", "--focus-share", "1.0",
          "--focus-rows", "--freeze-unet", "--image-lr", "1e-2"])  # fmt: skip
    shipped = UNet2DConditionModel.from_pretrained(weights / "image" / "unet", dtype=torch.float32).state_dict()
    trained = UNet2DConditionModel.from_pretrained(tmp_path / "image" / "unet").state_dict()
    assert all(torch.equal(trained[k], shipped[k]) for k in shipped)
    moved = json.loads((tmp_path / "record.json").read_text())["image"]["focus_rows_moved"]
    assert moved["star</w>"] > 0  # the stage itself checked that no other row or weight moved
    with pytest.raises(SystemExit):  # refused while the arguments are read, before any stage runs
        parse_args(["--freeze-unet"])
    with pytest.raises(SystemExit):
        parse_args(["--focus", "star", "--focus-rows", "--freeze-unet", "--unet-cross-attention-only"])


def test_unet_cross_attention_only_leaves_the_drawing_layers_alone(tmp_path):
    from diffusers import UNet2DConditionModel

    weights = tinyworld_path("image").parent
    main(["--work", str(tmp_path), "--stages", "tokenizer,vae,image", "--init-from", str(weights), "--image-steps",
          "2", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--unet-cross-attention-only"])  # fmt: skip
    shipped = UNet2DConditionModel.from_pretrained(weights / "image" / "unet", dtype=torch.float32).state_dict()
    trained = UNet2DConditionModel.from_pretrained(tmp_path / "image" / "unet").state_dict()
    moved = {k for k in shipped if not torch.equal(trained[k], shipped[k])}
    assert moved and all(".attn2." in k for k in moved)


def test_zero_video_steps_keep_the_earlier_video_unet(tmp_path):
    """With --init-from, `--video-steps 0` ships the earlier video UNet bit for bit (as v2.3 ships v2.2's), where a
    video stage would take the new image UNet's spatial layers."""

    from diffusers import UNet3DConditionModel

    weights = tinyworld_path("image").parent
    main(["--work", str(tmp_path), "--stages", "tokenizer,video", "--init-from", str(weights), "--video-steps", "0",
          "--device", "cpu", "--threads", "1"])  # fmt: skip
    shipped = UNet3DConditionModel.from_pretrained(weights / "video" / "unet", dtype=torch.float32).state_dict()
    kept = UNet3DConditionModel.from_pretrained(tmp_path / "video" / "unet").state_dict()
    assert shipped.keys() == kept.keys() and all(torch.equal(kept[k], shipped[k]) for k in shipped)
    record = json.loads((tmp_path / "record.json").read_text())["video"]
    assert record["steps"] == 0 and record["copied_from"] == str(weights / "video" / "unet")


def test_min_snr_weighting_and_late_timesteps():
    from t2v_unlearn.tinyworld import models
    from t2v_unlearn.tinyworld.train import diffusion_loss, sample_timesteps

    scheduler = models.make_scheduler()
    t = torch.tensor([10, 900])
    pred, noise = torch.zeros(2, 4, 2, 2), torch.ones(2, 4, 2, 2)  # per-sample MSE 1 for both
    assert diffusion_loss(pred, noise, t, scheduler, 0.0).item() == 1.0
    weighted = diffusion_loss(pred, noise, t, scheduler, 5.0).item()
    assert 0.5 < weighted < 1.0  # the nearly clean sample (SNR >> 5) counts less; the noisy one fully
    uniform = sample_timesteps(4000, scheduler, torch.Generator().manual_seed(0))
    late = sample_timesteps(4000, scheduler, torch.Generator().manual_seed(0), late_share=0.5)
    assert (late >= 300).float().mean() > (uniform >= 300).float().mean() + 0.1 and late.max() < 1000


def test_motion_word_rows_train_only_those_rows():
    """The video stage's `--motion-word-lr`: the motion words' rows move, nothing else in the encoder does, so a
    prompt without a motion word encodes bit for bit as before, and a prompt with one does not."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from t2v_unlearn.tinyworld.train import MotionWordRows

    tokenizer = CLIPTokenizer.from_pretrained(tinyworld_path("image") / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(tinyworld_path("image") / "text_encoder", dtype=torch.float32)
    encoder.requires_grad_(False)
    words = MotionWordRows(encoder, tokenizer)
    assert {"left</w>", "right</w>", "up</w>", "down</w>", "rotating</w>"} <= set(words.tokens)

    def encode(prompt):
        return encoder(tokenizer([prompt], padding="max_length", return_tensors="pt").input_ids)[0]

    with torch.no_grad():
        still, moving = encode("a red circle"), encode("a red circle moving left")
    optimizer = torch.optim.AdamW([words.weight], lr=1e-2, weight_decay=0.0)
    for _ in range(3):  # pull "moving left" away from "moving right"
        loss = -(encode("a red circle moving left") - encode("a red circle moving right")).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    words.check_only_rows_moved()
    assert words.moved()["left</w>"] > 0 and words.moved()["right</w>"] > 0
    before, after = words.separate(tokenizer, margin=1.0, max_steps=8, lr=1e-2)  # every two motions pulled apart
    assert after > 2 * before
    words.check_only_rows_moved()
    with torch.no_grad():
        assert torch.equal(encode("a red circle"), still)
        assert not torch.allclose(encode("a red circle moving left"), moving)
    with torch.no_grad():  # the check is not a formality: any other weight moving fails it
        next(p for p in encoder.parameters() if p is not words.weight).add_(1e-3)
    with pytest.raises(RuntimeError, match="moved"):
        words.check_only_rows_moved()


def config_without(tmp_path, *keys: str) -> str:
    """The shipped training.json with some configuration keys taken out: a record of a version trained before
    those options existed (v2.2 and earlier)."""

    record = json.loads((tinyworld_path("image").parent / "training.json").read_text())
    record["config"] = {k: v for k, v in record["config"].items() if k not in keys}
    path = tmp_path / "training.json"
    path.write_text(json.dumps(record))
    return str(path)


def test_data_offset_defaults_to_the_recorded_batches(tmp_path):
    """Weights recorded before `--data-offset` existed rebuild with the same batches (offset 0); v2.3 records its."""
    shipped = str(tinyworld_path("image").parent / "training.json")
    assert parse_args(["--config", shipped]).data_offset == 2_000_000
    assert parse_args(["--config", config_without(tmp_path, "data_offset")]).data_offset == 0
    assert parse_args(["--data-offset", "5"]).data_offset == 5


def test_swap_direction_replaces_only_a_direction():
    from t2v_unlearn.tinyworld.train import DIRECTIONS, swap_direction

    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        swapped = swap_direction("a red circle on a blue background moving left", generator)
        assert swapped.startswith("a red circle on a blue background moving ") and swapped.endswith(DIRECTIONS)
        seen.add(swapped.rsplit(" ", 1)[-1])
    assert seen == {"right", "up", "down"}  # every other direction, never the caption's own
    assert swap_direction("a red circle rotating", generator) is None
    assert swap_direction("", generator) is None


def test_direction_ranking_rewards_the_true_caption_and_saturates():
    """Low when the true caption's prediction is closer to the noise than the swapped caption's, high otherwise,
    and bounded on the good side (it cannot push the wrong caption's error up without end)."""
    from t2v_unlearn.tinyworld.train import direction_ranking

    noise = torch.zeros(2, 4, 3, 2, 2)
    close, far = torch.full_like(noise, 0.1), torch.full_like(noise, 0.3)
    good, gaps = direction_ranking(close, far, noise, beta=100.0)
    bad, _ = direction_ranking(far, close, noise, beta=100.0)
    assert torch.all(gaps > 0) and good.item() < 0.1 < 2.0 < bad.item()
    much_farther, _ = direction_ranking(close, torch.full_like(noise, 3.0), noise, beta=100.0)
    assert 0.0 <= much_farther.item() < good.item() and much_farther.item() < 1e-6
    pred = close.clone().requires_grad_(True)
    direction_ranking(pred, far, noise, beta=100.0)[0].backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_direction_contrast_and_spatial_rate_default_to_the_recorded_recipe():
    """Weights recorded before these options existed rebuild unchanged: no ranking term, spatial layers at 0.2x."""

    args = parse_args(["--config", str(tinyworld_path("image").parent / "training.json")])
    assert args.direction_contrast == 0.0 and args.spatial_lr_scale == 0.2


def test_focus_draws_its_subjects_and_leaves_the_recorded_batches_alone(tmp_path):
    """`--focus hexagon,star --focus-share s`: about s of still scenes and clips show a focus subject; without a focus
    the batches are bit for bit the recorded ones (no random number is drawn for it), so older recipes rebuild."""
    from t2v_unlearn.tinyworld.train import image_batch, parse_focus, video_batch

    older = config_without(tmp_path, "focus", "focus_share", "shape_margin")
    args = parse_args(["--config", older])
    assert args.focus == "" and args.focus_share == 0.0 and args.shape_margin == 0.0
    shipped = parse_args(["--config", str(tinyworld_path("image").parent / "training.json")])
    assert shipped.focus == "hexagon,star" and shipped.focus_share == 0.25 and shipped.shape_margin == 0.08
    plain, plain_captions = image_batch(7, 6)
    same, same_captions = image_batch(7, 6, focus=("hexagon",), focus_share=0.0)
    assert torch.equal(plain, same) and plain_captions == same_captions
    _, captions = image_batch(7, 64, focus=("hexagon",), focus_share=1.0)
    assert sum("hexagon" in c or "honeycomb" in c for c in captions) >= 40  # some captions misspell or describe it
    _, clips = video_batch(3, 4, focus=("star",), focus_share=1.0)
    assert sum("star" in c for c in clips) >= 2
    assert parse_focus(" hexagon, star ") == ("hexagon", "star")
    with pytest.raises(SystemExit, match="hexagonn"):
        parse_focus("hexagonn")


def test_focus_rows_are_the_focus_names_and_synonyms():
    """`--focus-rows` trains the rows of the focus subjects' names and synonyms, and needs a focus."""
    from transformers import CLIPTokenizer

    from t2v_unlearn.tinyworld.train import focus_tokens

    tokenizer = CLIPTokenizer.from_pretrained(tinyworld_path("image") / "tokenizer")
    expected = ["hexagon</w>", "honeycomb</w>", "star</w>", "starburst</w>"]
    assert focus_tokens(tokenizer, ("hexagon", "star")) == expected
    with pytest.raises(SystemExit, match="--focus"):
        focus_tokens(tokenizer, ())


def test_shape_separation_is_zero_once_shapes_are_apart_and_pulls_close_ones_apart():
    """The hinge is positive for the shipped encoder's closest shapes at a margin above their distance, and its
    gradient moves them apart; at a margin below every pair's distance it is zero."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from t2v_unlearn.tinyworld.train import ShapeSeparation

    tokenizer = CLIPTokenizer.from_pretrained(tinyworld_path("image") / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(tinyworld_path("image") / "text_encoder", dtype=torch.float32)
    with torch.no_grad():
        distances = ShapeSeparation(tokenizer, margin=0.0).distances(encoder)
    closest = distances.min().item()
    separation = ShapeSeparation(tokenizer, margin=closest * 1.5)
    assert ShapeSeparation(tokenizer, margin=closest * 0.99).hinge(encoder).sum().item() == 0.0
    hinge = separation.hinge(encoder)
    assert hinge.sum().item() > 0
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        separation.hinge(encoder).sum().backward()
        optimizer.step()
    with torch.no_grad():
        assert separation.distances(encoder).min().item() > closest
