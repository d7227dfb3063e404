import base64
import io
import re

import numpy as np
from PIL import Image

from t2v_unlearn.eval.evaluate import ConceptScores, kind_metrics
from t2v_unlearn.eval.report import THREAT_MODEL, format_estimate, line_plot_svg, write_report


def _scores(rate, frames, seed, n_prompts=3, n_seeds=2, n_frames=4, keep=None):
    rng = np.random.default_rng(seed)
    hits = [[rng.random(n_frames) < rate for _ in range(n_seeds)] for _ in range(n_prompts)]
    soft = [[h * 0.8 + 0.1 for h in row] for row in hits]
    kept = [[frames[(p + s) % len(frames)] for s in range(n_seeds)] for p in range(n_prompts)] if keep else None
    return ConceptScores(hits, soft, kept)


def test_report_is_self_contained_with_images_gifs_plot_and_caveat(tmp_path, frames_of):
    videos = frames_of("zorbo", 3, video=True)
    other = frames_of("circle", 3, video=True)
    pairs = {
        "zorbo": (_scores(0.9, videos, 0, keep=True), _scores(0.1, other, 1, keep=True)),
        "plimka": (_scores(0.8, videos, 2), _scores(0.7, videos, 3)),
        "circle": (_scores(0.9, videos, 4), _scores(0.9, videos, 5)),
    }
    categories = {"zorbo": "id", "plimka": "id", "circle": "object"}
    metrics = {"targets": ["zorbo"], "model": "tinyworld", "text_encoder": "ckpt", "suite": "tinyworld"}
    gallery = {}
    for kind in ("image", "video"):
        metrics[kind] = kind_metrics(pairs, categories, ["zorbo"], n_resamples=200, seed=0)
        frames = (lambda v: v[:1]) if kind == "image" else (lambda v: v)
        gallery[kind] = [
            {"concept": "zorbo", "prompt": f"a picture of zorbo {i}", "seed": 0, "original": frames(videos[i]),
             "unlearned": frames(other[i])}
            for i in range(2)
        ]  # fmt: skip
    assert metrics["video"]["erasure"]["value"] > 0.5
    path = write_report(tmp_path / "report.html", metrics, gallery)
    text = path.read_text()
    pngs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    gifs = re.findall(r'<img src="data:image/gif;base64,([^"]+)"', text)
    assert len(pngs) == 4 and len(gifs) == 4  # before/after for two prompts, images and videos
    assert not re.search(r'src="(?!data:)', text)  # nothing fetched from elsewhere
    png = Image.open(io.BytesIO(base64.b64decode(pngs[0])))
    np.testing.assert_array_equal(np.asarray(png), videos[0][0])  # lossless
    gif = Image.open(io.BytesIO(base64.b64decode(gifs[0])))
    assert gif.n_frames == videos.shape[1]
    assert "<svg" in text and "<polyline" in text and "frame index" in text
    assert THREAT_MODEL.split(":")[0] in text
    assert format_estimate(metrics["video"]["erasure"]) in text
    for concept in pairs:
        assert f"<td class=l>{concept}</td>" in text


def test_line_plot_and_estimate_formatting():
    svg = line_plot_svg({"a": [0.0, 0.5, 1.0], "b": [1.0, float("nan"), 0.0]})
    assert svg.count("<polyline") == 2 and svg.startswith("<svg")
    assert format_estimate({"value": 0.5, "low": 0.25, "high": 0.75, "n": 4}) == "0.50 [0.25, 0.75]"
    assert format_estimate({"value": None, "low": None, "high": None, "n": 0}) == "—"


def test_the_attack_table_lists_each_attacker_and_says_how_its_interval_was_drawn():
    """A metrics.json written since the nested interval lists each attacker's rate and says the interval resamples
    attackers; an older one (no `by_draw`) is rendered without that claim."""
    from t2v_unlearn.eval.report import _attacks

    figures = {"leakage": {"value": 0.3, "low": 0.1, "high": 0.7, "n": 240},
               "original": {"value": 0.99, "low": 0.96, "high": 1.0, "n": 240},
               "prompts": {"diamond": ["a"]}}  # fmt: skip
    budget = {"steps": 200, "lr": 5e-3, "num_shots": 4, "draws": [{"seed": 0, "shot_seed": 500}]}
    now = {"attacks": {"embedding": {"budget": budget, "image": {**figures, "by_draw": [
        {"target": "diamond", "seed": 0, "leakage": 0.675, "original": 1.0},
        {"target": "diamond", "seed": 1, "leakage": 0.0625, "original": 0.96}]}}}}  # fmt: skip
    before = {"attacks": {"embedding": {"budget": budget, "image": figures}}}
    html_now, html_before = _attacks(now), _attacks(before)
    assert "by attacker: 0.68, 0.06" in html_now and "the interval resamples attackers" in html_now
    assert "by attacker" not in html_before and "resamples attackers" not in html_before
