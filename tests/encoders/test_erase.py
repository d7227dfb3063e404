import copy

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel

from t2v_unlearn.encoders import EraseConfig, erase_concept
from t2v_unlearn.encoders.erase import denoising_target, load_image_folder
from t2v_unlearn.encoders.trainable import trainable_parameter_names
from t2v_unlearn.tinyworld.render import Scene, render

FAST = dict(num_shots=2, shot_steps=2, max_steps=4, check_every=2, stop_rule="max-steps", batch_size=2)


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_denoising_target_follows_prediction_type():
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 900])
    eps = DDIMScheduler(prediction_type="epsilon")
    assert torch.equal(denoising_target(eps, latents, noise, t), noise)
    v = DDIMScheduler(prediction_type="v_prediction")
    alpha = v.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = alpha.sqrt() * noise - (1 - alpha).sqrt() * latents
    assert torch.allclose(denoising_target(v, latents, noise, t), expected, atol=1e-6)
    with pytest.raises(ValueError, match="prediction_type"):
        denoising_target(DDIMScheduler(prediction_type="sample"), latents, noise, t)


def test_gradient_ascent_raises_the_concept_loss(image_pipe):
    config = EraseConfig(**{**FAST, "max_steps": 6}, objective="ascent", preserve_weight=0.0, lr=1e-3)
    result = erase_concept(image_pipe, ["zorbo"], config, progress=False)
    assert result.history[-1]["concept_loss"] > result.history[0]["concept_loss"]


def test_v_prediction_scheduler_is_followed(image_pipe):
    pipe = copy.copy(image_pipe)
    pipe.scheduler = DDIMScheduler.from_config(image_pipe.scheduler.config, prediction_type="v_prediction")
    config = EraseConfig(**FAST, objective="ascent", preserve_weight=0.0, lr=1e-3)
    result = erase_concept(pipe, ["star"], config, progress=False)
    assert result.history[-1]["concept_loss"] > result.history[0]["concept_loss"]


@pytest.mark.parametrize("preset", ["ffn+last-attn", "ffn", "last-k"])
def test_only_the_chosen_parameters_change_and_unet_vae_stay(image_pipe, preset):
    unet, vae, encoder = _state(image_pipe.unet), _state(image_pipe.vae), _state(image_pipe.text_encoder)
    result = erase_concept(image_pipe, ["circle"], EraseConfig(**FAST, trainable=preset), progress=False)
    chosen = set(trainable_parameter_names(image_pipe.text_encoder, preset, last_k=1))
    after = result.text_encoder.state_dict()
    changed = {k for k in after if not torch.equal(after[k], encoder[k])}
    assert changed and changed <= chosen
    assert changed == set(result.changed_parameters)
    assert _same(unet, image_pipe.unet.state_dict()) and _same(vae, image_pipe.vae.state_dict())
    assert _same(encoder, image_pipe.text_encoder.state_dict())  # the pipeline's own encoder is untouched


def test_presets_resolve_the_last_layer_from_the_config():
    for layers in (12, 23):
        config = CLIPTextConfig(vocab_size=50, hidden_size=8, intermediate_size=16, num_hidden_layers=layers,
                                num_attention_heads=2, max_position_embeddings=8)  # fmt: skip
        names = trainable_parameter_names(CLIPTextModel(config), "ffn+last-attn")
        attention_layers = {n.split(".layers.")[1].split(".")[0] for n in names if "self_attn" in n}
        assert attention_layers == {str(layers - 1)}
        assert sum(".mlp." in n for n in names) == 4 * layers
    with pytest.raises(ValueError, match="last_k"):
        trainable_parameter_names(CLIPTextModel(config), "last-k", last_k=99)


def test_erasing_is_deterministic(image_pipe):
    a = erase_concept(image_pipe, ["striped"], EraseConfig(**FAST), progress=False).text_encoder.state_dict()
    b = erase_concept(image_pipe, ["striped"], EraseConfig(**FAST), progress=False).text_encoder.state_dict()
    assert _same(a, b)


def test_anchor_gap_rule_watches_without_changing_the_run(image_pipe):
    quick = {**FAST, "max_steps": 3, "num_shots": 2, "eval_timesteps": 2}
    plain = erase_concept(image_pipe, ["zorbo"], EraseConfig(**quick), progress=False)
    watch = EraseConfig(**{**quick, "stop_rule": "anchor-gap", "check_every": 1}, gap_ratio=0.0)
    watched = erase_concept(image_pipe, ["zorbo"], watch, progress=False)
    assert watched.stopped_by == "max_steps" and watched.steps == 3
    assert _same(plain.text_encoder.state_dict(), watched.text_encoder.state_dict())
    gaps = [h["gap_ratio"] for h in watched.history]
    assert len(gaps) == 3 and all(0 <= g for g in gaps)
    assert "checks_in_optimise" in watched.timings
    # a threshold the first check meets ends the run there
    early = erase_concept(
        image_pipe,
        ["zorbo"],
        EraseConfig(**{**quick, "stop_rule": "anchor-gap", "check_every": 2, "max_steps": 6}, gap_ratio=0.999),
        progress=False,
    )
    assert early.stopped_by == "anchor_gap" and early.steps == 2


def test_stop_rule_stops_early_when_the_ratio_is_reached(image_pipe):
    config = EraseConfig(**{**FAST, "stop_rule": "loss-ratio", "max_steps": 30}, objective="ascent", stop_ratio=0.0)
    result = erase_concept(image_pipe, ["heart"], config, progress=False)
    assert result.stopped_by == "loss_ratio" and result.steps == config.check_every


def test_several_concepts_in_one_run(image_pipe):
    result = erase_concept(image_pipe, ["zorbo", "star"], EraseConfig(**FAST), progress=False)
    assert [c.name for c in result.concepts] == ["zorbo", "star"]
    assert set(result.shots) == {"zorbo", "star"}


def test_real_images_are_resized_and_used(image_pipe, tmp_path):
    for i in range(2):
        frame = render(Scene("id", "zorbo", "white", x=0.45 + 0.1 * i))[0]
        Image.fromarray(frame).resize((90, 120)).save(tmp_path / f"shot{i}.png")
    result = erase_concept(image_pipe, ["zorbo"], EraseConfig(**FAST, images=str(tmp_path)), progress=False)
    assert result.shots["zorbo"].shape == (2, 64, 64, 3)


def test_image_folder_keeps_the_centre_of_a_tall_image(tmp_path):
    tall = np.zeros((120, 40, 3), dtype=np.uint8)  # black, with a red band in the middle third only
    tall[40:80] = (255, 0, 0)
    Image.fromarray(tall).save(tmp_path / "tall.png")
    (image,) = load_image_folder(tmp_path, 32)
    assert image.shape == (32, 32, 3)
    # cropped, not squashed: the centre 40 x 40 square is all band (a squashed image would be black at top and bottom)
    assert image[..., 0].min() > 200 and image[..., 1].max() < 50


@pytest.mark.parametrize("bad", [[""], ["   "], [], ["not-a-tinyworld-thing"]])
def test_bad_concepts_are_refused(image_pipe, bad):
    with pytest.raises(ValueError, match="concept"):
        erase_concept(image_pipe, bad, EraseConfig(**FAST), progress=False)


def test_missing_or_empty_image_folder_is_refused(image_pipe, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        erase_concept(image_pipe, ["zorbo"], EraseConfig(**FAST, images=str(tmp_path / "nope")), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        erase_concept(image_pipe, ["zorbo"], EraseConfig(**FAST, images=str(tmp_path / "empty")), progress=False)


def test_config_validates():
    with pytest.raises(ValueError, match="trainable"):
        EraseConfig(trainable="everything")
    with pytest.raises(ValueError, match="stop_rule"):
        EraseConfig(stop_rule="never")
    for bad in ({"check_every": 0}, {"eval_timesteps": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError, match="at least 1"):
            EraseConfig(**bad)
    with pytest.raises(ValueError, match="stop_ratio"):
        EraseConfig(stop_ratio=-1.0)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="gap_ratio"):
            EraseConfig(gap_ratio=bad)
    with pytest.raises(ValueError, match="needs objective 'anchor'"):
        EraseConfig(objective="ascent", stop_rule="anchor-gap")
    assert EraseConfig().stop_rule == "anchor-gap" and EraseConfig(objective="ascent").stop_rule == "loss-ratio"


def test_given_shots_skip_generation(image_pipe):
    shots = {"square": np.stack([render(Scene("object", "square", "gray", "red", "solid"))[0]] * 2)}
    result = erase_concept(image_pipe, ["square"], EraseConfig(**FAST), progress=False, shots=shots)
    assert result.shots["square"] is shots["square"]


def test_an_erase_toward_several_anchors_checks_its_gap_beside_a_one_anchor_concept(image_pipe):
    # the gap rule's target is the mean over each row's own anchors: here 3 for the square and 1 for zorbo
    shots = {"square": np.stack([render(Scene("object", "square", "gray", "red", "solid"))[0]] * 2),
             "zorbo": np.stack([render(Scene("id", "zorbo", "white"))[0]] * 2)}  # fmt: skip
    config = EraseConfig(**{**FAST, "stop_rule": "anchor-gap", "max_steps": 2, "check_every": 1, "gap_ratio": 1e-6})
    result = erase_concept(image_pipe, ["square", "zorbo"], config, progress=False, shots=shots)
    assert result.anchors == {"square": "triangle, cross, star", "zorbo": "something"}
    assert [s.anchor_count for s in result.concepts] == [3, 1]
    gaps = [h["gap_ratio"] for h in result.history if "gap_ratio" in h]
    assert len(gaps) == 2 and all(np.isfinite(gaps)) and result.stopped_by == "max_steps"


def test_unet_checkpointing_recomputes_and_gives_the_same_encoder(image_pipe):
    calls = []
    resnet = image_pipe.unet.up_blocks[-1].resnets[0]  # after cross-attention: on the gradient path
    forward = resnet.forward

    def counted(*args, **kwargs):  # (forward hooks do not fire when checkpointing recomputes)
        calls.append(1)
        return forward(*args, **kwargs)

    resnet.forward = counted
    try:
        plain = erase_concept(image_pipe, ["zorbo"], EraseConfig(**FAST), progress=False)
        plain_calls, calls[:] = list(calls), []
        recomputed = erase_concept(image_pipe, ["zorbo"], EraseConfig(**FAST, unet_checkpointing=True),
                                   progress=False)  # fmt: skip
    finally:
        del resnet.forward
    # each training step runs the block once more, in the backward pass
    assert len(calls) == len(plain_calls) + FAST["max_steps"]
    assert not image_pipe.unet.is_gradient_checkpointing  # the pipeline is handed back as it came
    a, b = plain.text_encoder.state_dict(), recomputed.text_encoder.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_encoder_checkpointing_gives_the_same_encoder(image_pipe):
    plain = erase_concept(image_pipe, ["striped"], EraseConfig(**FAST), progress=False).text_encoder.state_dict()
    config = EraseConfig(**FAST, gradient_checkpointing=True)
    recomputed = erase_concept(image_pipe, ["striped"], config, progress=False).text_encoder
    assert not recomputed.is_activation_checkpointing  # handed back without it
    state = recomputed.state_dict()
    assert any(not torch.equal(state[k], image_pipe.text_encoder.state_dict()[k]) for k in state)
    assert all(torch.allclose(plain[k], state[k], atol=1e-6) for k in plain)


def test_robust_mode_erases_under_an_inner_attack(image_pipe):
    plain = erase_concept(image_pipe, ["zorbo"], EraseConfig(**FAST), progress=False)
    robust = erase_concept(image_pipe, ["zorbo"], EraseConfig(**FAST, robust=True), progress=False)
    a, b = plain.text_encoder.state_dict(), robust.text_encoder.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the attacked prompts' term moved the encoder differently
    with pytest.raises(ValueError, match="anchor objective"):
        EraseConfig(robust=True, objective="ascent")


def test_anchor_prompts_replace_the_concept_and_its_variants(image_pipe):
    from t2v_unlearn.encoders.prompts import resolve_concepts

    spec = resolve_concepts(["zorbo"], None, "tinyworld", anchor="plimka")[0]
    assert len(spec.prompts) == len(spec.anchor_prompts) and spec.anchor == "plimka"
    assert any("zorby" in p for p in spec.prompts)  # the synonym
    assert all("plimka" in a and "zorb" not in a.lower() for a in spec.anchor_prompts)
    with pytest.raises(ValueError, match="the concept itself"):
        resolve_concepts(["zorbo"], None, "tinyworld", anchor="zorbo")


def test_several_anchors_pair_every_prompt_with_each_anchor():
    from t2v_unlearn.encoders.prompts import resolve_concepts

    (spec,) = resolve_concepts(["square"], None, "tinyworld", anchor=" triangle,cross , star,")
    n = len(spec.prompts)
    assert spec.anchor == "triangle, cross, star" and spec.anchor_count == 3 and len(spec.anchor_prompts) == 3 * n
    for a, target in enumerate(("triangle", "cross", "star")):  # anchor by anchor, each over every prompt
        for i, anchored in enumerate(spec.anchor_prompts[a * n : (a + 1) * n]):
            assert target in anchored and "square" not in anchored and "block" not in anchored, anchored
            first = spec.anchor_prompts[i]  # prompt i toward triangle: the same sentence, another anchor
            assert anchored.replace(target, "X") == first.replace("triangle", "X"), (anchored, first)
    (one,) = resolve_concepts(["square"], None, "tinyworld", anchor="triangle")
    assert one.anchor_count == 1 and one.anchor_prompts == spec.anchor_prompts[:n]
    with pytest.raises(ValueError, match="the concept itself"):
        resolve_concepts(["square"], None, "tinyworld", anchor="triangle, square")
    with pytest.raises(ValueError, match="--to is empty"):
        EraseConfig(anchor=" , ")


def test_default_anchors_are_a_faithfully_drawn_shape_and_never_the_concept():
    """Shapes go to triangle (drawn faithfully by both models, benchmarks/anchor_choice.py), triangle itself to
    cross, the diamond to square, cross and hexagon and the square to triangle, cross and star (one drawn per row
    and step); styles to solid (checkered for solid); characters to `something`."""
    from t2v_unlearn.encoders.prompts import resolve_concepts

    names = ["square", "triangle", "diamond", "solid", "zorbo"]
    anchors = {name: resolve_concepts([name], None, "tinyworld")[0].anchor for name in names}  # each erased alone
    assert anchors == {"square": "triangle, cross, star", "triangle": "cross", "diamond": "square, cross, hexagon",
                       "solid": "checkered", "zorbo": "something"}  # fmt: skip
    (spec,) = resolve_concepts(["diamond"], None, "tinyworld")
    n = len(spec.prompts)
    for a, shape in enumerate(("square", "cross", "hexagon")):
        assert all(shape in p and "diamond" not in p for p in spec.anchor_prompts[a * n : (a + 1) * n])
    # an anchor erased in the same run is passed over, by any of its names: the next of the concept's candidates
    anchors = {s.name: s.anchor for s in resolve_concepts(["diamond", "block"], None, "tinyworld")}
    assert anchors == {"diamond": "triangle", "square": "triangle, cross, star"}
    anchors = {s.name: s.anchor for s in resolve_concepts(["square", "star"], None, "tinyworld")}
    assert anchors == {"square": "triangle", "star": "triangle"}  # several anchors are passed over as one
    anchors = {s.name: s.anchor for s in resolve_concepts(["Rhombus", "square", "triangle"], None, "tinyworld")}
    assert anchors == {"diamond": "cross", "square": "cross", "triangle": "cross"}
    # every candidate erased too: the first that is not the concept, never the concept itself (an error about --to)
    anchors = {s.name: s.anchor for s in resolve_concepts(["triangle", "cross"], None, "tinyworld")}
    assert anchors == {"triangle": "cross", "cross": "triangle"}
    (spec,) = resolve_concepts(["circle"], None, "tinyworld")
    assert all("triangle" in a and "circle" not in a for a in spec.anchor_prompts)


def test_prompt_templates_follow_the_models_registry_entry():
    from t2v_unlearn.encoders.prompts import LITERATURE_CONTEXTS, LITERATURE_TEMPLATES, resolve_concepts

    world = resolve_concepts(["zorbo"], None, "tinyworld", variants=False)[0]
    real = resolve_concepts(["zorbo"], "id", "literature", variants=False)[0]
    assert world.tinyworld and world.category == "id" and not real.tinyworld
    templates = (*LITERATURE_TEMPLATES["id"], *LITERATURE_CONTEXTS["id"])
    assert set(real.prompts) == {t.format(c="zorbo") for t in templates}
    assert set(world.prompts) != set(real.prompts) and any("moving" in p for p in world.prompts)  # + motions
    with pytest.raises(ValueError, match="templates must be one of"):
        resolve_concepts(["zorbo"], None, "sd2")


def test_erase_can_train_on_more_misspellings_than_one_draw_holds():
    """One spelling-variant draw by default, up to eight (spelling.TRAINING_SEEDS), each variant in one context; the
    anchor prompts hold none of them; `misspellings` outside 0-8 is refused."""
    from t2v_unlearn.encoders.prompts import resolve_concepts
    from t2v_unlearn.spelling import training_variants

    every = resolve_concepts(["square"], None, "tinyworld", misspellings=8)[0]
    one = resolve_concepts(["square"], None, "tinyworld")[0]
    none = resolve_concepts(["square"], None, "tinyworld", misspellings=0)[0]
    words = {w.lower() for p in every.prompts for w in p.replace(",", "").split()}
    assert {v.lower() for v in training_variants("square")} <= words
    assert len(none.prompts) < len(one.prompts) < len(every.prompts)
    anchor_words = {w.lower() for p in every.anchor_prompts for w in p.replace(",", "").split()}
    assert not anchor_words & {"square", *(v.lower() for v in training_variants("square"))}
    with pytest.raises(ValueError, match="misspellings must be between 0 and 8"):
        EraseConfig(misspellings=9)


def test_each_spelling_variant_is_trained_in_several_contexts():
    """`variant_contexts` puts each misspelling in that many of the concept's prompts (a case variant in one: a
    lower-casing tokenizer reads it as the name); by default three for an object, one otherwise."""
    from t2v_unlearn.encoders.prompts import resolve_concepts
    from t2v_unlearn.spelling import training_variants

    def contexts(spec, variant):
        return sum(variant in p.split() for p in spec.prompts)

    one = resolve_concepts(["square"], None, "tinyworld")[0]
    three = resolve_concepts(["square"], None, "tinyworld", variant_contexts=3)[0]
    misspelt = [v for v in training_variants("square", 1) if v.lower() != "square"]
    assert misspelt and all(contexts(one, v) == 1 and contexts(three, v) == 3 for v in misspelt)
    assert contexts(three, "Square") == 1
    assert len({p for p in three.prompts if misspelt[0] in p.split()}) == 3  # three different sentences
    from t2v_unlearn.encoders.erase import spelling_contexts

    style = resolve_concepts(["striped"], None, "tinyworld")
    assert spelling_contexts(EraseConfig(), [three]) == 3 and spelling_contexts(EraseConfig(), style) == 1
    assert spelling_contexts(EraseConfig(variant_contexts=2), style) == 2  # the flag wins
    with pytest.raises(ValueError, match="variant_contexts"):
        EraseConfig(variant_contexts=0)


def test_the_attack_handle_holds_the_spellings_but_no_shared_word():
    """`robust_handle='spellings'` (an object's default) offsets the tokens of the name, its synonyms and trained
    spelling variants, never a token the anchor prompts hold too ("a", "of"); 'name' (a style's and a character's
    default) only the name's; the radius must be positive."""
    from transformers import CLIPTokenizer

    from t2v_unlearn.encoders.erase import attack_token_ids
    from t2v_unlearn.encoders.prompts import resolve_concepts
    from t2v_unlearn.pipelines import tinyworld_path

    tokenizer = CLIPTokenizer.from_pretrained(tinyworld_path("image") / "tokenizer")
    specs = resolve_concepts(["square"], None, "tinyworld")
    (name,) = attack_token_ids(tokenizer, specs, EraseConfig(robust_handle="name"))
    wide = attack_token_ids(tokenizer, specs, EraseConfig())  # an object's default since the eighth session
    style = resolve_concepts(["striped"], None, "tinyworld")
    assert attack_token_ids(tokenizer, style, EraseConfig()) == [tokenizer.get_vocab()["striped</w>"]]
    vocab = tokenizer.get_vocab()
    assert name == vocab["square</w>"] and name in wide
    assert {vocab["block</w>"], vocab["squar</w>"], vocab["sqaure</w>"]} <= set(wide)
    assert not {vocab["a</w>"], vocab["of</w>"], vocab["triangle</w>"]} & set(wide)
    with pytest.raises(ValueError, match="robust_handle"):
        EraseConfig(robust_handle="everything")
    with pytest.raises(ValueError, match="robust_radius"):
        EraseConfig(robust_radius=0)


def test_the_gap_rule_threshold_follows_the_category_unless_given():
    from t2v_unlearn.encoders.erase import gap_threshold
    from t2v_unlearn.encoders.prompts import resolve_concepts

    shape, character, style = resolve_concepts(["square", "zorbo", "striped"], None, "tinyworld")
    assert gap_threshold(EraseConfig(), [character]) == 0.2
    assert gap_threshold(EraseConfig(), [style]) == 0.1  # at 0.2 the embedding attack brought it back (§6)
    assert gap_threshold(EraseConfig(), [shape]) == 0.05  # a shape still shows at 0.2 and 0.1 (docs/METHOD.md §6)
    assert gap_threshold(EraseConfig(), [shape, character]) == 0.05  # the strictest of the concepts'
    assert gap_threshold(EraseConfig(gap_ratio=0.3), [shape]) == 0.3


def test_the_shots_steps_and_the_check_set_follow_the_category_unless_given(image_pipe):
    from t2v_unlearn.encoders.erase import check_timesteps_for, shot_steps_for
    from t2v_unlearn.encoders.prompts import resolve_concepts

    shape, character, style = resolve_concepts(["square", "zorbo", "striped"], None, "tinyworld")
    assert [shot_steps_for(EraseConfig(), [c]) for c in (shape, character, style)] == [12, 8, 12]
    assert [check_timesteps_for(EraseConfig(), [c]) for c in (shape, character, style)] == [4, 2, 4]
    assert shot_steps_for(EraseConfig(), [character, shape]) == 12  # the most of the concepts'
    assert check_timesteps_for(EraseConfig(), [character, style]) == 4
    assert shot_steps_for(EraseConfig(shot_steps=5), [shape]) == 5  # given: it wins
    assert check_timesteps_for(EraseConfig(eval_timesteps=3), [character]) == 3
    # what ran is recorded: the shots drawn in the character's 8 steps, its check set at 2 timesteps per shot
    quick = {**FAST, "stop_rule": "anchor-gap", "shot_steps": None, "max_steps": 1, "check_every": 1}
    result = erase_concept(image_pipe, ["zorbo"], EraseConfig(**quick), progress=False)
    assert result.resolved()["shot_steps"] == 8 and result.resolved()["eval_timesteps"] == 2
    assert result.resolved()["anchors"] == {"zorbo": "something"}  # the category's default, recorded
    given = {"zorbo": result.shots["zorbo"]}  # shots handed in: none drawn
    assert erase_concept(image_pipe, ["zorbo"], EraseConfig(**quick), progress=False, shots=given).shot_steps is None
    with pytest.raises(ValueError, match="at least 1"):
        EraseConfig(shot_steps=0)


def test_the_progress_bar_ends_where_the_gap_rule_should_fire():
    from t2v_unlearn.encoders.erase import predicted_end

    # zorbo on TinyWorld: gap 0.37 at the first check (step 5), threshold 0.2; the rule fired at step 10
    assert predicted_end(5, 0.37, 0.2, check_every=5, max_steps=50) == 10
    assert predicted_end(5, 0.9, 0.1, check_every=5, max_steps=50) == 50  # slow: the cap, never past it
    assert predicted_end(10, 1.2, 0.2, check_every=5, max_steps=50) == 50  # not shrinking: the cap
    assert predicted_end(5, 0.21, 0.2, check_every=5, max_steps=50) == 10  # at least the next check
    assert predicted_end(10, 0.15, 0.2, check_every=5, max_steps=50) == 10  # fired: here
    assert predicted_end(5, 0.5, 0.0, check_every=5, max_steps=50) == 50  # a threshold never met
    # levelled off: no lower than an earlier check (a shape's gap under the inner attack), so the cap
    assert predicted_end(40, 0.074, 0.05, check_every=5, max_steps=50, best=0.057) == 50
    assert predicted_end(40, 0.055, 0.05, check_every=5, max_steps=50, best=0.057) == 45  # still falling


def test_the_concept_is_also_trained_beside_other_things():
    from t2v_unlearn.encoders.prompts import _tinyworld_contexts, resolve_concepts
    from t2v_unlearn.eval.suites import load_suite
    from t2v_unlearn.tinyworld.taxonomy import load_taxonomy

    world = load_taxonomy()
    names = {*world.names("id"), *world.names("object"), *world.names("style"), *world.colours}
    suite = load_suite("tinyworld").concepts
    for concept in ("square", "striped", "zorbo"):
        spec = resolve_concepts([concept], None, "tinyworld")[0]
        plain = resolve_concepts([concept], None, "tinyworld", contexts=False)[0]
        beside = _tinyworld_contexts(concept, spec.category)
        assert set(beside) <= set(spec.prompts) and not set(beside) & set(plain.prompts), concept
        assert all(set(p.replace(",", "").split()) & (names - {concept}) for p in beside), concept
        assert not set(beside) & set(suite[concept].prompts)  # the method's own sentences, not the suite's
        for prompt, anchor in zip(spec.prompts * spec.anchor_count, spec.anchor_prompts, strict=True):
            if prompt in beside:  # the other thing stays; only the concept is replaced (toward each anchor)
                words = set(anchor.replace(",", "").split())
                others = set(prompt.replace(",", "").split()) & (names - {concept})
                assert others <= words and concept not in words, (prompt, anchor)
    literature = resolve_concepts(["snoopy"], "id", "literature")[0]
    assert "snoopy with a dog" in literature.prompts


def test_robust_defaults_on_for_styles_and_objects_only():
    from t2v_unlearn.encoders.erase import robust_for
    from t2v_unlearn.encoders.prompts import resolve_concepts

    def specs(name):
        return resolve_concepts([name], None, templates="tinyworld")

    assert not robust_for(EraseConfig(), specs("zorbo"))
    assert robust_for(EraseConfig(), specs("striped")) and robust_for(EraseConfig(), specs("square"))
    assert not robust_for(EraseConfig(robust=False), specs("square"))  # the flag wins
    assert robust_for(EraseConfig(robust=True), specs("zorbo"))
    assert not robust_for(EraseConfig(objective="ascent"), specs("square"))  # the attack needs the anchor objective
