"""The benchmark scripts run (at reduced scale) and their memory counter counts what it should."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _realscale():
    return _benchmark("realscale")


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


def test_evaluator_on_samples_plans_every_label_and_scores_only_clear_cells(tmp_path):
    """The blind check's plan holds every label of a category equally often, shuffled; `score` counts the detector
    right only against the person's clear labels, and refuses a labels file that does not fit the sheets."""
    import argparse

    import pytest

    bench = _benchmark("evaluator_on_samples")
    cells = bench.plan("object", 2)
    assert sorted(c[0] for c in cells) == sorted(bench.labels_of("object") * 2)
    assert [c[0] for c in cells] != sorted(c[0] for c in cells)  # rows do not give the labels away
    answers = {head: [{"prompted": "a", "prompt": "p", "seed": 0, "detector": bench.labels_of(head)[0]}] * 4
               for head in bench.HEADS}  # fmt: skip
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    first = {head: bench.labels_of(head)[0] for head in bench.HEADS}
    second = {head: bench.labels_of(head)[1] for head in bench.HEADS}
    labels = {head: [first[head], first[head], second[head], "unclear"] for head in bench.HEADS}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    args = argparse.Namespace(work=str(tmp_path), labels=str(tmp_path / "labels.json"), out=str(tmp_path / "o.json"),
                              detector="tinyworld")  # fmt: skip
    bench.score(args)
    result = json.loads((tmp_path / "o.json").read_text())["by_category"]["object"]
    assert result["clear"] == 3 and result["unclear"] == 1
    assert abs(result["accuracy"]["value"] - 2 / 3) < 1e-9 and result["accuracy"]["high"] < 1.0
    assert result["wrong"] == [{"seen": second["object"], "detector": first["object"], "prompt": "p", "seed": 0}]
    # another detector re-reads the saved cells: on four blank gray canvases the shipped classifier says "none"
    import numpy as np

    from t2v_unlearn.pipelines.load import tinyworld_path

    for head in bench.HEADS:
        np.save(tmp_path / f"images_{head}.npy", np.full((4, 64, 64, 3), 128, np.uint8))
    bench.score(argparse.Namespace(**{**vars(args), "detector": str(tinyworld_path("classifier"))}))
    rescored = json.loads((tmp_path / "o.json").read_text())["by_category"]["object"]
    assert rescored["accuracy"]["value"] == 0 and {w["detector"] for w in rescored["wrong"]} == {"none"}
    labels["style"] = labels["style"][:3]
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(SystemExit, match="style has 3 labels for 4 cells"):
        bench.score(args)
    labels["style"] = ["zorbo"] * 4
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(SystemExit, match="not"):
        bench.score(args)


def test_a_blind_sheet_of_images_mixes_its_files_and_scores_each_file_apart(tmp_path):
    """`images` shuffles two files' images into one numbered sheet; `score` reports, per file, how often the person
    and the detector saw the prompted label."""
    import argparse

    import numpy as np

    bench = _benchmark("evaluator_on_samples")
    rng = np.random.default_rng(0)
    for name in ("attack", "control"):
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8))
    args = argparse.Namespace(work=str(tmp_path / "w"), images=[str(tmp_path / "attack.npy"),
                              str(tmp_path / "control.npy")], take=[6, 2], head="object", prompted="square",
                              detector="tinyworld")  # fmt: skip
    bench.image_cells(args)
    cells = json.loads((tmp_path / "w" / "answers.json").read_text())["object"]
    assert [c["source"] for c in cells].count("attack") == 6 and len(cells) == 8
    assert [c["source"] for c in cells] != sorted(c["source"] for c in cells)  # shuffled together
    person = ["square" if c["source"] == "control" else "unclear" if c["seed"] == 0 else "circle" for c in cells]
    (tmp_path / "labels.json").write_text(json.dumps({"object": person}))
    bench.score(argparse.Namespace(work=str(tmp_path / "w"), labels=str(tmp_path / "labels.json"),
                                   out=str(tmp_path / "o.json"), detector="tinyworld"))  # fmt: skip
    sources = json.loads((tmp_path / "o.json").read_text())["by_category"]["object"]["by_source"]
    assert sources["control"]["person_sees_it"]["value"] == 1 and sources["control"]["cells"] == 2
    assert sources["attack"]["person_sees_it"]["value"] == 0 and sources["attack"]["unclear"] == 1


def test_video_leak_scores_an_erased_encoders_videos_frame_by_frame(image_pipe, tmp_path):
    """At reduced scale (1 prompt, 2 seeds, 2 steps): the checkpoint's concept, its suite prompts, one hit vector
    per frame, and an interval over videos that a handful of videos leaves wide."""
    from t2v_unlearn.encoders import EraseConfig, erase_concept, save_checkpoint
    from t2v_unlearn.eval.detector import load_detector
    from t2v_unlearn.eval.suites import load_suite

    config = EraseConfig(num_shots=2, shot_steps=2, max_steps=1, stop_rule="max-steps", batch_size=2)
    result = erase_concept(image_pipe, ["zorbo"], config, progress=False)
    folder = tmp_path / "zorbo"
    save_checkpoint(folder, result, image_pipe.text_encoder, image_pipe.tokenizer, config, "tinyworld", {})
    suite = load_suite("tinyworld")
    entry = _benchmark("video_leak").leak(folder, 1, 2, 2, load_detector(suite.detector), suite)
    assert entry["concept"] == "zorbo" and entry["prompts"] == list(suite.concepts["zorbo"].prompts[:1])
    assert entry["videos"] == 2 and len(entry["by_frame_index"]) == 8
    assert 0 <= entry["frames_with_the_concept"] <= 16 and entry["videos_with_a_hit"] <= 2
    assert len(entry["frames_per_video"]) == 2 and sum(entry["frames_per_video"]) == entry["frames_with_the_concept"]
    assert list(entry["by_prompt"]) == entry["prompts"]
    rate = entry["frame_hit_rate"]
    assert rate["n"] == 2 and rate["high"] - rate["low"] > 0.5  # two videos cannot pin a rate down


def test_embedding_attack_inverts_the_original_models_images_and_counts_images_with_a_hit(image_pipe, tmp_path):
    """At reduced scale (2 attack steps, 1 prompt, 2 seeds): the attack moves the token through the erased encoder
    from the original pipeline's images, and counts each attacked image with a hit once."""
    from t2v_unlearn.encoders import EraseConfig, erase_concept, load_pipeline, save_checkpoint
    from t2v_unlearn.eval.detector import load_detector
    from t2v_unlearn.eval.embedding_attack import EmbeddingAttackConfig
    from t2v_unlearn.eval.suites import load_suite

    config = EraseConfig(num_shots=2, shot_steps=2, max_steps=1, stop_rule="max-steps", batch_size=2)
    result = erase_concept(image_pipe, ["zorbo"], config, progress=False)
    folder = tmp_path / "zorbo"
    save_checkpoint(folder, result, image_pipe.text_encoder, image_pipe.tokenizer, config, "tinyworld", {})
    erased = load_pipeline("image", text_encoder=folder, progress=False)
    suite = load_suite("tinyworld")
    prompts = list(suite.concepts["zorbo"].prompts[:1])
    attack = EmbeddingAttackConfig(steps=2)
    run = _benchmark("embedding_attack").recovery(erased, image_pipe, "zorbo", attack, prompts, [0, 1], 2,
                                                  load_detector(suite.detector), suite)  # fmt: skip
    assert run["images"] == 2 and 0 <= run["hits"] <= 2 and list(run["by_prompt"]) == prompts
    assert sum(run["by_prompt"].values()) == run["hits"] and run["offset_norm"] > 0
    size = image_pipe.unet.config.sample_size * image_pipe.vae_scale_factor + 4  # a cell with its frame
    assert run["_sheet"].shape == (2 * size, 10 * size, 3)  # the attacker's 4 images, then the prompt's 2 samples
    assert run["_samples"].shape == (2, size - 4, size - 4, 3)
    video = _benchmark("embedding_attack").video_recovery(load_pipeline("video", text_encoder=folder, progress=False),
                                                          "zorbo", run["_offset"], prompts, [0, 1], 2,
                                                          load_detector(suite.detector), suite, frames=3)  # fmt: skip
    assert video["videos"] == 2 and video["frames"] == 6 and 0 <= video["frames_with_the_concept"] <= 6
    assert video["frame_hit_rate"]["n"] == 2  # videos are the clusters


def test_anchor_choice_confusion_counts_frames_and_widens_to_the_samples():
    """The confusion row is the share of frames read as each label; its interval counts samples (videos), not
    frames, so 4 frames of one video are one observation."""
    import numpy as np

    class Detector:  # reads frame i as labels[value of its first pixel]
        def probabilities(self, frames, labels):
            return np.eye(len(labels))[frames[:, 0, 0, 0]]

    labels = ["circle", "square", "none"]
    frames = np.zeros((8, 2, 2, 3), dtype=np.int64)
    frames[[1, 2, 3], 0, 0, 0] = 1  # 3 of 8 frames read as square
    frames[7, 0, 0, 0] = 2
    row = _benchmark("anchor_choice").confusion(Detector(), frames, labels, clusters=2)
    assert row["circle"]["value"] == 0.5 and row["square"]["value"] == 0.375 and row["none"]["value"] == 0.125
    assert all(r["n"] == 2 for r in row.values())
    assert row["square"]["high"] - row["square"]["low"] > 0.5  # two videos: wide, not the 8 frames' interval
    bench = _benchmark("anchor_choice")
    assert bench.worst_other(row, "circle")["concept"] == "square"
    clean = {"circle": {"value": 0.9}, "square": {"value": 0.0}, "none": {"value": 0.1}}
    assert bench.worst_other(clean, "circle")["concept"] is None  # read as nothing but itself and "none"


def test_erase_seeds_pools_hits_over_erase_seeds_with_the_pooled_interval():
    """The pooled rate is all hits over all images of a variant's erases; its interval is the pooled count's Wilson
    interval (not the mean of per-seed intervals), so three seeds' 144 images bound it tighter than one seed's 48."""
    from t2v_unlearn.eval.metrics import wilson_bounds

    pooled = _benchmark("erase_seeds").pooled
    three = pooled([1, 2, 2], [48, 48, 48])
    assert three["hits"] == 5 and three["n"] == 144 and abs(three["value"] - 5 / 144) < 1e-4
    low, high = wilson_bounds(5 / 144, 144)
    assert abs(three["low"] - low) < 1e-4 and abs(three["high"] - high) < 1e-4
    one = pooled([2], [48])
    assert one["high"] - one["low"] > three["high"] - three["low"]
    assert pooled([0, 0], [48, 48])["value"] == 0.0 and pooled([0, 0], [48, 48])["high"] > 0


def test_detector_floor_counts_only_the_images_whose_prompts_exclude_the_concept(tmp_path):
    """detector_floor.py re-reads an evaluation's saved original samples: the floor `eval` writes (images whose prompts
    exclude the concept) beside the earlier figure on every other image, for each detector given."""
    import numpy as np

    from t2v_unlearn.eval.runner import ORIGINAL, make_rows, save_sample
    from t2v_unlearn.eval.suites import load_suite

    floor = _benchmark("detector_floor")
    suite = load_suite("tinyworld")
    _, prompts, _ = suite.plan(["square"], quick=True)
    rows = make_rows("image", "tinyworld", {ORIGINAL: None}, prompts, [0])
    rng = np.random.default_rng(0)
    for row in rows:
        save_sample(rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8), row.path(tmp_path))
    result = floor.floors(tmp_path, "tinyworld", ["tinyworld"], 1, "tinyworld", full=False, targets=["square"])
    tables = result["detectors"]["tinyworld"]
    for concept in prompts:
        excluding = sum(suite.excludes(row.prompt, row.concept, concept) for row in rows)
        others = sum(row.concept != concept for row in rows)
        assert tables["floor"][concept]["n"] == excluding <= others == tables["floor_every_other_image"][concept]["n"]
    # the square's: the styles' open prompts ("something in solid style") are left out; a character's: nothing is
    assert tables["floor"]["square"]["n"] < tables["floor_every_other_image"]["square"]["n"]
    missing = rows[0].path(tmp_path)
    missing.unlink()
    with pytest.raises(SystemExit, match="missing"):
        floor.floors(tmp_path, "tinyworld", ["tinyworld"], 1, "tinyworld", full=False, targets=["square"])


def test_shot_quality_reads_each_shot_erase_would_draw_with_its_categorys_head(image_pipe):
    """At reduced scale (2 solver steps, one erase seed): one answer per shot, under the concept's category."""
    from t2v_unlearn.encoders import EraseConfig
    from t2v_unlearn.eval.detector import load_detector

    hits = _benchmark("shot_quality").shot_hits(image_pipe, load_detector("tinyworld"), 2, [0], ["zorbo", "square"])
    shots = EraseConfig().num_shots
    assert set(hits) == {"id", "object"} and len(hits["id"]) == len(hits["object"]) == shots
    assert all(isinstance(hit, bool) for hit in hits["id"] + hits["object"])


def test_the_strong_inner_attack_screen_restarts_a_fresh_inversion_on_schedule(image_pipe):
    """At reduced scale (3 steps, a fresh inversion of 2 Adam steps on the first call and every 2nd): the erase runs
    under the swapped inner attack, whose fresh inversions start from zero and move the offset."""
    from t2v_unlearn.encoders import EraseConfig, erase_concept
    from t2v_unlearn.encoders import erase as erase_module

    screen = _benchmark("strong_inner_attack")
    attack = screen.restarting_attack(every=2, ti_steps=2, lr=5e-3)
    default, offsets = erase_module._inner_attack, []

    def recorded(*args):
        offsets.append((args[9].clone(), attack(*args)))
        return offsets[-1][1]

    erase_module._inner_attack = recorded
    try:
        config = EraseConfig(num_shots=2, shot_steps=2, max_steps=3, stop_rule="max-steps", batch_size=2, robust=True)
        erase_concept(image_pipe, ["square"], config, progress=False)
    finally:
        erase_module._inner_attack = default
    assert len(offsets) == 3
    (_, first), (start, second), (_, third) = offsets
    assert first.norm() > 0 and torch.equal(start, first)  # the 2nd call continues from the 1st's inversion
    assert not torch.equal(second, first) and third.norm() > 0


def test_the_reach_benchmark_splices_the_attack_at_the_token_or_after_it(image_pipe):
    """`position_masks` marks the concept's own tokens and every position after its last one (the end token and the
    padding), nothing for a prompt without it; `spliced_encodings` takes the attacked rows exactly there."""
    reach = _benchmark("attack_reach")
    tokenizer, encoder = image_pipe.tokenizer, image_pipe.text_encoder
    prompts = ["a picture of a diamond", "a square", "a diamond next to a diamond"]
    ids = reach.concept_token_ids(tokenizer, "diamond")
    masks = reach.position_masks(tokenizer, prompts, ids)
    tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length).input_ids
    for row, prompt_ids in enumerate(tokens):
        where = [i for i, t in enumerate(prompt_ids) if t in ids]
        assert masks["token"][row, :, 0].nonzero().flatten().tolist() == where
        expected = list(range(where[-1] + 1, len(prompt_ids))) if where else []
        assert masks["after"][row, :, 0].nonzero().flatten().tolist() == expected
    # random, not constant: the encoder's layer norms subtract a constant offset (all ones) out
    offset = torch.randn(encoder.config.hidden_size, generator=torch.Generator().manual_seed(0))
    spliced = reach.spliced_encodings(encoder, tokenizer, "diamond", offset, prompts)
    full, plain = spliced["full"], spliced["none"]
    for name, mask in (("token only", masks["token"]), ("after only", masks["after"])):
        assert torch.equal(spliced[name], torch.where(mask, full, plain))
    assert torch.equal(full[1], plain[1])  # no diamond: the attack changes nothing
    for name in ("token only", "after only"):
        assert (spliced[name][0] - plain[0]).abs().max() > 1e-2


def test_the_random_restart_screen_keeps_the_strongest_of_its_starts(image_pipe):
    """At reduced scale: each call runs the default attack from the warm start and from 2 random points of the ball,
    and returns the one under which the shots denoise best (checked against every start's result)."""
    from t2v_unlearn.encoders import EraseConfig, erase_concept
    from t2v_unlearn.encoders import erase as erase_module

    screen = _benchmark("strong_inner_attack")
    default, calls, results = erase_module._inner_attack, [], []

    def counted(*args):
        offset = default(*args)
        results.append(offset)
        return offset

    erase_module._inner_attack = counted
    attack = screen.random_restart_attack(restarts=2)  # its default attack is `counted`

    def recorded(*args):
        results.clear()
        chosen = attack(*args)
        calls.append((args, chosen, list(results)))
        return chosen

    erase_module._inner_attack = recorded
    try:
        config = EraseConfig(num_shots=2, shot_steps=2, max_steps=2, stop_rule="max-steps", batch_size=2, robust=True,
                             robust_radius=4.0)  # fmt: skip
        erase_concept(image_pipe, ["square"], config, progress=False)
    finally:
        erase_module._inner_attack = default
    assert len(calls) == 2
    for args, chosen, candidates in calls:
        assert len(candidates) == 3 and any(torch.equal(chosen, c) for c in candidates)
        model, tokenizer, unet, scheduler, prompts, latents, noise, timesteps, ids = args[:9]
        losses = []
        for candidate in candidates:
            with torch.no_grad(), erase_module.token_offset(model, ids, candidate):
                hidden = erase_module._encode(model, tokenizer, prompts)
                losses.append(erase_module.denoising_loss(unet, scheduler, latents, noise, timesteps, hidden).item())
        assert torch.equal(chosen, candidates[int(torch.tensor(losses).argmin())])
        length = model.get_input_embeddings().weight.norm(dim=-1).mean()
        assert all(c.norm() <= 4.0 * length * (1 + 1e-5) for c in candidates)


def test_the_reach_benchmark_runs_end_to_end_and_pools_every_part(image_pipe, tmp_path):
    """At reduced scale (2 attack steps, 1 prompt, 1 seed, 2 solver steps): every part (the rays too) writes its
    counts, the bounded attacker's offset stays on its ball, and the pooled figures add up the runs."""
    reach = _benchmark("attack_reach")
    prompts = ["a picture of a zorbo", "a zorbo"]
    encoder, tokenizer = image_pipe.text_encoder, image_pipe.tokenizer
    first = reach.random_offset_encodings(encoder, tokenizer, "zorbo", prompts, 3.0)
    assert torch.equal(first, reach.random_offset_encodings(encoder, tokenizer, "zorbo", prompts, 3.0))  # seeded
    plain = reach.random_offset_encodings(encoder, tokenizer, "zorbo", prompts, 0.0)
    assert torch.allclose(plain, reach._encode(encoder, tokenizer, prompts), atol=1e-6)
    assert (first - plain).abs().amax(dim=(1, 2)).min() > 1e-2  # every prompt moved, each by its own offset
    from t2v_unlearn.encoders import EraseConfig, erase_concept, save_checkpoint

    config = EraseConfig(num_shots=2, shot_steps=2, max_steps=1, stop_rule="max-steps", batch_size=2)
    result = erase_concept(image_pipe, ["zorbo"], config, progress=False)
    folder, out = tmp_path / "zorbo", tmp_path / "reach.json"
    save_checkpoint(folder, result, image_pipe.text_encoder, image_pipe.tokenizer, config, "tinyworld", {})
    command = [sys.executable, str(ROOT / "benchmarks" / "attack_reach.py"), str(folder), "--attack-seeds", "0",
               "--radii", "0.5", "--prompts", "1", "--seeds", "1", "--steps", "2", "--attack-steps", "2",
               "--random-lengths", "0", "3", "--ray-lengths", "1", "4", "--threads", "1",
               "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True)
    report = json.loads(out.read_text())
    assert set(report["random_offsets"]) == {f"{e}, {n} token lengths" for e in ("erased", "original") for n in (0, 3)}
    assert all(r["images"] == 1 and 0 <= r["hits"] <= 1 for r in report["random_offsets"].values())
    (run,) = report["runs"]
    assert set(run["reach"]) == {"0.5", "unbounded"} and set(run["positions"]) == {"token only", "after only"}
    assert run["reach"]["0.5"]["offset_norm"] <= round(0.5 * report["token_length"], 3) + 1e-3
    assert {"erased offset, original encoder", "original's offset, erased encoder"} <= set(run["transfer"])
    assert -1 <= run["transfer"]["cosine"] <= 1
    rays = {f"{d} direction, {n} token lengths" for d in ("original's", "attacker's") for n in (1, 4)}
    assert set(run["ray"]) == rays and all(r["images"] == 1 for r in run["ray"].values())
    assert len(report["pooled"]) == 10 and all(figure["n"] == 1 for figure in report["pooled"].values())
    assert report["pooled"]["reach unbounded"]["value"] == run["reach"]["unbounded"]["hits"]


def test_pooling_attack_results_merges_attackers_and_refuses_disagreeing_counts(tmp_path):
    """Two files of `embedding_attack.py` on one checkpoint: their attackers pooled (a seed in both files counted
    once), the pooled rate over all images, the interval resampling attackers wider than Wilson's; a seed whose
    counts differ between the files is refused."""
    bench = _benchmark("embedding_attack")

    def run(seed, by_prompt):
        return {"attack_seed": seed, "hits": sum(by_prompt.values()), "images": 20, "by_prompt": by_prompt}

    def write(name, runs):
        entry = {"concept": "diamond", "seeds": 10, "runs": {"unlearned": {"per_seed": runs}}}
        (tmp_path / name).write_text(json.dumps({"results": {"dia": entry}}))
        return tmp_path / name

    a = write("a.json", [run(0, {"p": 10, "q": 9}), run(1, {"p": 0, "q": 1})])
    b = write("b.json", [run(2, {"p": 5, "q": 5}), run(1, {"p": 0, "q": 1})])
    merged = bench.pool_files([a, b])["dia"]["runs"]["unlearned"]
    assert [r["attack_seed"] for r in merged["per_seed"]] == [0, 1, 2]
    assert merged["pooled"]["value"] == pytest.approx(30 / 60) and merged["pooled"]["n"] == 60
    between = merged["pooled_between_attackers"]
    assert between["value"] == pytest.approx(0.5) and between["high"] - between["low"] > (
        merged["pooled"]["high"] - merged["pooled"]["low"]
    )
    c = write("c.json", [run(1, {"p": 3, "q": 1})])
    with pytest.raises(SystemExit, match="attack seed 1"):
        bench.pool_files([a, c])


def test_projecting_the_readout_out_of_every_writer_leaves_only_the_embeddings_along_it(image_pipe):
    """`readout_directions` gives orthonormal directions (in `means` mode orthogonal to the other concepts' centred
    means); after `project_writers`, the residual stream's component along them at every position is the token and
    position embedding's alone, even with an arbitrary vector in the concept's slot. The original encoder's is not."""
    readout = _benchmark("linear_readout")
    tokenizer, encoder = image_pipe.tokenizer, image_pipe.text_encoder
    prompts = ["a red diamond", "a diamond in striped style", "a small diamond moving left"]
    others, kept = ["square", "circle", "star"], ["a red square", "plimka running", "a circle in dotted style"]
    for mode in readout.MODES:
        directions, share = readout.readout_directions(encoder, tokenizer, "diamond", others, prompts, mode, 3, kept)
        assert directions.shape == (3, encoder.config.hidden_size)
        assert torch.allclose(directions @ directions.T, torch.eye(3), atol=1e-5)
        assert 0 < share[0] <= share[-1] <= 1 + 1e-6
    # the retained mode's first direction takes at least as much difference per unit of retained writing as any
    written = readout.residual_states(encoder, tokenizer, kept, written=True).flatten(0, 1)
    cost = written.T @ written / len(written)
    cost = cost + 1e-3 * cost.diagonal().mean() * torch.eye(len(cost))
    after = readout.position_masks(tokenizer, prompts, readout.concept_token_ids(tokenizer, "diamond"))["after"]
    states = readout.residual_states(encoder, tokenizer, prompts)
    swapped = torch.stack([readout.residual_states(encoder, tokenizer, [p.replace("diamond", o) for p in prompts])
                           for o in others])  # fmt: skip
    differences = (states - swapped.mean(0))[after.squeeze(-1)]

    def ratio(d):
        return float((differences @ d).pow(2).mean() / (d @ cost @ d))

    best = readout.readout_directions(encoder, tokenizer, "diamond", others, prompts, "retained", 1, kept)[0][0]
    plain = readout.readout_directions(encoder, tokenizer, "diamond", others, prompts, "plain", 1)[0][0]
    assert ratio(best) >= ratio(plain) * (1 - 1e-3)
    assert ratio(best) >= max(ratio(torch.nn.functional.normalize(torch.randn(len(cost)), dim=0)) for _ in range(5))
    edited = readout.project_writers(encoder, directions)
    untouched = readout.project_writers(encoder, directions, strength=0.0)
    assert all(torch.equal(p, q) for p, q in zip(untouched.parameters(), encoder.parameters(), strict=True))
    pairs = zip(edited.parameters(), encoder.parameters(), strict=True)
    assert not any(p.data_ptr() == q.data_ptr() for p, q in pairs)
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
    ids = ids.input_ids
    slot = torch.randn(edited.config.hidden_size, generator=torch.Generator().manual_seed(0)) * 5
    from t2v_unlearn.encoders.embedding import token_offset

    with token_offset(edited, readout.concept_token_ids(tokenizer, "diamond"), slot), torch.no_grad():
        embedded = edited.embeddings(input_ids=ids)
        last = edited(ids, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(last @ directions.T, embedded @ directions.T, atol=1e-3)
    with torch.no_grad():
        plain = encoder(ids, output_hidden_states=True).hidden_states[-1]
        plain_embedded = encoder.embeddings(input_ids=ids)
    assert (plain @ directions.T - plain_embedded @ directions.T).abs().max() > 0.1


def test_the_far_offset_screen_adds_its_term_once_a_step_to_the_attacked_loss(image_pipe, monkeypatch):
    """At reduced scale (3 robust steps): `shell_term`'s anchor loss adds the far-offset term once a step, on the call
    after the inner attack, and leaves the other calls as the default computes them; its term is a positive distance
    that the weight scales."""
    from t2v_unlearn.encoders import EraseConfig, erase_concept
    from t2v_unlearn.encoders import erase as erase_module

    screen = _benchmark("strong_inner_attack")
    default_anchor = erase_module.anchor_loss
    attack, anchor, values = screen.shell_term(10.0, (2.0, 10.0))
    added = []

    def recorded(*args):
        loss = anchor(*args)
        added.append(float(loss - default_anchor(*args)))
        return loss

    monkeypatch.setattr(erase_module, "_inner_attack", attack)
    monkeypatch.setattr(erase_module, "anchor_loss", recorded)
    config = EraseConfig(num_shots=2, shot_steps=2, max_steps=3, stop_rule="max-steps", batch_size=2, robust=True)
    erase_concept(image_pipe, ["square"], config, progress=False)
    assert len(values) == 3 and all(v > 0 for v in values)
    assert len(added) == 6  # the concept prompts' call, then the attacked prompts' call, each step
    assert added[0::2] == [0.0, 0.0, 0.0]
    assert added[1::2] == pytest.approx([10.0 * v for v in values], rel=1e-4)


def test_the_place_search_screen_steers_the_encodings_after_the_name_toward_a_place(image_pipe):
    """`shape_place` gives the category's shared space (orthonormal directions, one fewer than the concepts) and the
    concept's coordinates there; `place_search` moves the offset on the diamond's token so that the encodings after
    it come closer to another place in that space, the closer the more steps it takes."""
    screen = _benchmark("strong_inner_attack")
    tokenizer, encoder = image_pipe.tokenizer, image_pipe.text_encoder
    prompts = ["a picture of a diamond", "a red diamond in striped style", "a small diamond"]
    others = ["square", "circle", "star"]
    directions, place, centre = screen.shape_place(encoder, tokenizer, "diamond", others, prompts)
    assert directions.shape == (3, encoder.config.hidden_size) and place.shape == (3,)
    assert torch.allclose(directions @ directions.T, torch.eye(3), atol=1e-5)
    ids = screen.erase_module.concept_token_ids(tokenizer, "diamond")
    start = torch.zeros(encoder.config.hidden_size)
    found = []
    for steps in (1, 12):
        attack, distances = screen.place_search(directions, place + 3.0, centre, 2, steps, (2.0, 4.0), 5e-2)
        offset = attack(encoder, tokenizer, None, None, prompts, None, None, None, ids, start, None)
        assert offset.shape == start.shape and len(distances) == 1
        found.append(distances[0])
    assert found[1] < found[0]


def test_the_latent_screen_offsets_the_residual_stream_after_its_layer_at_the_concepts_tokens_only(image_pipe):
    screen = _benchmark("strong_inner_attack")
    tokenizer, encoder = image_pipe.tokenizer, image_pipe.text_encoder
    ids = tokenizer(["a red diamond in striped style"], padding="max_length", max_length=77,
                    return_tensors="pt").input_ids  # fmt: skip
    concept = screen.erase_module.concept_token_ids(tokenizer, "diamond")
    at = torch.isin(ids[0], torch.tensor(concept))
    offset = torch.randn(encoder.config.hidden_size)
    layers, seen = encoder.get_submodule("encoder.layers"), []
    watch = layers[2].register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0][0].clone()))
    try:
        with torch.no_grad():
            clean = encoder(ids)[0]
            with screen.latent_offset(1)(encoder, concept, offset):
                moved = encoder(ids)[0]
            after = encoder(ids)[0]  # the hooks are gone
    finally:
        watch.remove()
    torch.testing.assert_close(seen[1][at], seen[0][at] + offset)  # what layer 2 reads: layer 1's output, offset
    torch.testing.assert_close(seen[1][~at], seen[0][~at])  # at the name only
    assert not torch.allclose(moved[0, ~at], clean[0, ~at])  # later positions read the name's state
    torch.testing.assert_close(after, clean)


def test_pooling_erases_resamples_them_before_their_attackers(tmp_path):
    """`--erases`: two erases of one concept (two erase seeds) pooled as one, with an interval that resamples erases,
    then attackers, then prompts; wider than the one that treats every erase's attackers as one crowd when the
    erases differ, and one erase per checkpoint name."""
    bench = _benchmark("embedding_attack")

    def run(seed, by_prompt):
        return {"attack_seed": seed, "hits": sum(by_prompt.values()), "images": 20, "by_prompt": by_prompt}

    def write(name, checkpoint, runs):
        entry = {"concept": "square", "seeds": 10, "prompts": ["p", "q"], "runs": {"unlearned": {"per_seed": runs}}}
        (tmp_path / name).write_text(json.dumps({"results": {checkpoint: entry}}))
        return tmp_path / name

    low = [run(s, {"p": 1, "q": 0}) for s in range(4)]
    high = [run(s, {"p": 8, "q": 7}) for s in range(4)]
    pooled = bench.pool_erases([write("a.json", "sq-0", low), write("b.json", "sq-1", high)], "square")["square"]
    figures = pooled["runs"]["unlearned"]
    assert pooled["erases"] == ["sq-0", "sq-1"] and len(figures["per_seed"]) == 8
    assert {r["erase"] for r in figures["per_seed"]} == {"sq-0", "sq-1"}
    assert figures["pooled"]["value"] == pytest.approx(64 / 160) and figures["pooled"]["n"] == 160
    assert figures["by_erase"]["sq-0"]["value"] == pytest.approx(0.05)
    between = figures["pooled_between_erases"]
    assert between["value"] == pytest.approx(0.4) and between["low"] <= 0.05 + 1e-9 and between["high"] >= 0.75 - 1e-9
    width = between["high"] - between["low"]
    assert width > figures["pooled_between_attackers"]["high"] - figures["pooled_between_attackers"]["low"]
    with pytest.raises(SystemExit, match="in two files"):
        bench.pool_erases([write("a.json", "sq-0", low), write("c.json", "sq-0", high)], "square")
