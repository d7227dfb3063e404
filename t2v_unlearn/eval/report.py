"""A self-contained HTML report of an evaluation: numbers with intervals, before/after images and GIFs, a plot.

Everything is inline: images and GIFs as base64 data URIs, the per-frame hit-rate plot as SVG. The file
opens offline in any browser and can be mailed as one attachment.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

THREAT_MODEL = (
    "Only the text encoder was changed. The UNet still holds the concept: whoever swaps the original text "
    "encoder back, or optimises a token embedding against the unlearned encoder (a textual-inversion style "
    "attack), can recover it. These numbers measure what the unlearned encoder does with ordinary prompts, not "
    "robustness against such an attack."
)
HEADLINE = (
    ("erasure", "Erasure (1 − nM of the target)"),
    ("retention", "Retention (mean nM of retained concepts)"),
    ("retention_same_category", "… same category as the target"),
    ("retention_other_categories", "… other categories"),
    ("harmonic_mean", "Harmonic mean of erasure and retention"),
)
COLOURS = {"original": "#1f77b4", "unlearned": "#d62728"}
STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.caveat{background:#fff4e5;border-left:4px solid #f0a030;padding:.8em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
figure{margin:0;border:1px solid #ddd;padding:6px}figure img{width:128px;height:128px;image-rendering:pixelated}
figcaption{font-size:.85em}.pair{display:flex;gap:6px}.pair div{text-align:center;font-size:.8em}
"""


def png_data_uri(image: np.ndarray) -> str:
    """A uint8 (H, W, 3) image as a lossless PNG data URI."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def gif_data_uri(frames: np.ndarray, fps: int = 8) -> str:
    """uint8 (F, H, W, 3) frames as a looping animated GIF data URI."""
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return "data:image/gif;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def format_estimate(entry: dict | None, digits: int = 2) -> str:
    """'0.83 [0.71, 0.92]' from an estimate dict; '—' where undefined."""
    if not entry or entry.get("value") is None:
        return "—"
    text = f"{entry['value']:.{digits}f}"
    if entry.get("low") is not None and entry.get("high") is not None:
        text += f" [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"
    return text


def line_plot_svg(series: dict[str, list[float]], width: int = 760, height: int = 260, title: str = "") -> str:
    """An inline SVG line plot of y in [0, 1] against frame index, one polyline per named series."""
    left, right, top, bottom = 48, 240, 24, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    length = max((len(v) for v in series.values()), default=1)

    def x(i):
        return left + (plot_w * i / (length - 1) if length > 1 else plot_w / 2)

    def y(v):
        return top + plot_h * (1 - v)

    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
    parts = [svg + ' font-family="sans-serif">']
    parts.append(f'<text x="{left}" y="16" font-size="13">{html.escape(title)}</text>')
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end">{tick:g}</text>')
    for i in range(length):
        parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 16}" font-size="11" text-anchor="middle">{i}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 4}" font-size="12" text-anchor="middle">frame index</text>'
    )
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>')
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for k, (name, values) in enumerate(series.items()):
        colour = palette[k % len(palette)]
        dash = ' stroke-dasharray="5,3"' if "retained" in name else ""
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values) if v is not None and math.isfinite(v))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{points}"/>')
        ly = top + 14 + 16 * k
        parts.append(f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 28}" y1="{ly - 4}" y2="{ly - 4}" '
                     f'stroke="{colour}" stroke-width="2"{dash}/>')  # fmt: skip
        parts.append(f'<text x="{left + plot_w + 32}" y="{ly}" font-size="11">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


DECODED_NOTE = (
    "<p>“videos (decoded mp4)” scores the same generated videos after an H.264 round trip (crf 18), as a viewer "
    "of the files would see them; the other columns score the lossless frames.</p>"
)
KIND_TITLES = {"image": "images", "video": "videos", "video_mp4": "videos (decoded mp4)",
               "animatediff": "AnimateDiff videos"}  # fmt: skip


def _headline_table(metrics: dict, kinds: list[str]) -> str:
    titles = "".join(f"<th>{KIND_TITLES[k]}</th>" for k in kinds)
    rows = [f"<table><tr><th class=l>metric</th>{titles}</tr>"]
    for key, label in HEADLINE:
        cells = "".join(f"<td>{format_estimate(metrics[k].get(key))} <small>n={metrics[k].get(key, {}).get('n', 0)}"
                        "</small></td>" for k in kinds)  # fmt: skip
        rows.append(f"<tr><td class=l>{html.escape(label)}</td>{cells}</tr>")
    return "".join(rows) + "</table>"


def _notes(metrics: dict, kinds: list[str]) -> str:
    notes = [n for k in kinds for n in metrics[k].get("notes", [])]
    return "".join(f"<p class=caveat>{html.escape(n)}</p>" for n in dict.fromkeys(notes))


def _collateral(metrics: dict, kinds: list[str]) -> str:
    """The detector-free figures: how far retained prompts' samples and encodings moved."""
    rows = []
    for kind in kinds:
        entry = metrics[kind].get("collateral", {}).get("sample_distance")
        if entry:
            label = f"{KIND_TITLES[kind]}: mean absolute pixel difference, same prompt and seed"
            rows.append(f"<tr><td class=l>{label}</td><td>{format_estimate(entry)} <small>n={entry.get('n', 0)}"
                        "</small></td></tr>")  # fmt: skip
    encoder = metrics.get("collateral_encoder")
    if encoder:
        rows.append(f"<tr><td class=l>encoder: mean squared difference of the last hidden states, "
                    f"{encoder['n_prompts']} retained prompts</td><td>{encoder['mean_squared_difference']:.2e}"
                    "</td></tr>")  # fmt: skip
    if not rows:
        return ""
    return ("<h2>Collateral, without a detector</h2><p>How far the unlearned encoder moves what other concepts' "
            "prompts produce (0: not at all).</p><table>" + "".join(rows) + "</table>")  # fmt: skip


def _attacks(metrics: dict) -> str:
    attacks = metrics.get("attacks")
    if not attacks:
        return ""
    rows = ["<table><tr><th class=l>attack</th><th class=l>measured on</th><th>hit rate, original</th>"
            "<th>leakage (hit rate, unlearned)</th><th class=l>example prompts</th></tr>"]  # fmt: skip
    for family, entry in attacks.items():
        if not entry:
            rows.append(f"<tr><td class=l>{html.escape(family)}</td><td class=l colspan=4>not measured: the suite "
                        "lists no such prompts for these concepts</td></tr>")  # fmt: skip
        for kind, figures in entry.items():
            if kind not in KIND_TITLES:  # the embedding attack's "budget", shown below the table
                continue
            examples = [p for prompts in figures["prompts"].values() for p in prompts][:3]
            each = ", ".join(f"{d['leakage']:.2f}" for d in figures.get("by_draw", []))
            each = f"<br><small>by attacker: {each}</small>" if each else ""
            rows.append(f"<tr><td class=l>{html.escape(family)}</td><td class=l>{KIND_TITLES[kind]}</td>"
                        f"<td>{format_estimate(figures['original'])}</td><td>{format_estimate(figures['leakage'])}"
                        f" <small>n={figures['leakage'].get('n', 0)}</small>{each}</td>"
                        f"<td class=l><small>{html.escape(' | '.join(examples))}</small></td></tr>")  # fmt: skip
    budget = (attacks.get("embedding") or {}).get("budget")
    note = ""
    if budget:
        draws = budget.get("draws")
        if draws:
            seeds = ", ".join(str(d["shot_seed"]) for d in draws)
            images = (
                f"{budget.get('num_shots', 4)} images of the concept that the original model drew from seeds S + "
                f"1000 i (never the erase's own shots), for each of {len(draws)} attackers (S = {seeds}), pooled"
            )
        else:
            images = "the pipeline's own 4 shots (an evaluation older than the attacker's own images)"
        bound = budget.get("max_norm")
        reach = f" held within {bound:g} token-embedding lengths (a bounded attacker)" if bound else ""
        nested = any("by_draw" in figures for figures in attacks["embedding"].values() if isinstance(figures, dict))
        interval = (" Attackers differ far more than one attacker's prompts do, so the interval resamples attackers, "
                    "then prompts: with few attackers it is wide." if nested else "")  # fmt: skip
        note = (
            f"<p>The embedding attack: textual inversion of one token offset{reach}, {budget['steps']} steps at lr "
            f"{budget['lr']:g}, on {images}; the original encoder, attacked the same way, is the control."
            f"{interval}</p>"
        )
    return ("<h2>Attacks</h2><p>Prompts erase never trained on, with the erased concepts' names changed or "
            "embedded in other words.</p>" + "".join(rows) + "</table>" + note)  # fmt: skip


def _correction(metrics: dict, kinds: list[str]) -> str:
    rows = []
    for kind in kinds:
        entry = metrics[kind].get("correction")
        if entry:
            rows.append(f"<tr><td class=l>{KIND_TITLES[kind]}</td><td>{format_estimate(entry['original'])}</td>"
                        f"<td>{format_estimate(entry['unlearned'])}</td></tr>")  # fmt: skip
    if not rows:
        return ""
    to = html.escape(next(metrics[k]["correction"]["to"] for k in kinds if metrics[k].get("correction")))
    return (f"<h2>Concept correction: replaced by “{to}”</h2><p>How often the erased concepts' prompts show {to}"
            ".</p><table><tr><th class=l>measured on</th><th>original</th><th>unlearned</th></tr>"
            + "".join(rows) + "</table>")  # fmt: skip


def _floor_table(kind_metrics: dict) -> str:
    floor = kind_metrics.get("floor")
    if not floor:
        return ""
    cells = "".join(f"<tr><td class=l>{html.escape(c)}</td><td>{format_estimate(e)} <small>n={e.get('n', 0)}</small>"
                    "</td></tr>" for c, e in floor.items())  # fmt: skip
    return ("<p>False-hit floor: each concept's hit rate on the original model's samples that should not show it "
            "(prompts of another concept of its category, or naming one; prompts that leave its category open, such "
            "as a style on no named shape, are left out). An unlearned rate at or below it is no evidence of the "
            "concept.</p><table><tr><th class=l>concept"
            "</th><th>floor</th></tr>" + cells + "</table>")  # fmt: skip


def _concept_table(kind_metrics: dict) -> str:
    head = ("<tr><th class=l>concept</th><th class=l>category</th><th class=l>role</th><th>videos</th>"
            "<th>M original</th><th>M unlearned</th><th>nM (paired)</th><th>any-frame original</th>"
            "<th>any-frame unlearned</th><th>soft original</th><th>soft unlearned</th></tr>")  # fmt: skip
    rows = [f"<table>{head}"]
    for concept, entry in kind_metrics["concepts"].items():
        original, unlearned = entry.get("original", {}), entry.get("unlearned", {})
        n = entry["n_prompts"] * entry["n_seeds"]
        cells = [
            html.escape(concept), entry["category"], entry["role"], f"{n} ({entry['n_prompts']} prompts)",
            format_estimate(original.get("m_score")), format_estimate(unlearned.get("m_score")),
            format_estimate(entry.get("normalised_m_score")),
            format_estimate(original.get("any_frame")), format_estimate(unlearned.get("any_frame")),
            format_estimate(original.get("soft_score")), format_estimate(unlearned.get("soft_score")),
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td{' class=l' if i < 3 else ''}>{c}</td>" for i, c in enumerate(cells)))
    return "".join(rows) + "</table>"


def _gallery(items: list[dict], animated: bool) -> str:
    figures = []
    for item in items:
        panels = []
        for model in ("original", "unlearned"):
            frames = item.get(model)
            if frames is None:
                continue
            uri = gif_data_uri(frames) if animated else png_data_uri(frames[0])
            alt = f"{model}: {item['prompt']}"
            panels.append(f'<div><img src="{uri}" alt="{html.escape(alt)}"><br>{model}</div>')
        seed = "" if item.get("seed") is None else f", seed {item['seed']}"
        caption = f"<b>{html.escape(item['concept'])}</b>: “{html.escape(str(item['prompt']))}”{seed}"
        figures.append(f"<figure><div class=pair>{''.join(panels)}</div><figcaption>{caption}</figcaption></figure>")
    return f"<div class=grid>{''.join(figures)}</div>" if figures else "<p>No samples kept for display.</p>"


def _frame_plot(kind_metrics: dict) -> str:
    series: dict[str, list[float]] = {}
    retained: dict[str, list[list[float]]] = {"original": [], "unlearned": []}
    for concept, entry in kind_metrics["concepts"].items():
        for model in ("original", "unlearned"):
            if model not in entry:
                continue
            curve = entry[model]["per_frame_hit_rate"]
            if entry["role"] == "target":
                series[f"{concept} ({model})"] = curve
            else:
                retained[model].append(curve)
    for model, curves in retained.items():
        if curves:
            length = min(len(c) for c in curves)
            series[f"retained mean ({model})"] = np.mean([c[:length] for c in curves], axis=0).tolist()
    return line_plot_svg(series, title="hit rate h_c at each frame index, over all videos")


def render_report(metrics: dict, gallery: dict[str, list[dict]]) -> str:
    """The report as one HTML string."""
    kinds = [k for k in ("image", "video", "video_mp4", "animatediff") if k in metrics]
    targets = ", ".join(metrics.get("targets", []))
    source = metrics.get("text_encoder") or metrics.get("videos") or ""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>t2v_unlearn evaluation: {html.escape(targets)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Erasing “{html.escape(targets)}”</h1>",
        f"<p>Model <code>{html.escape(str(metrics.get('model', '')))}</code>, source <code>{html.escape(source)}"
        f"</code>, suite <code>{html.escape(str(metrics.get('suite', '')))}</code>. Intervals are 95% cluster "
        "bootstrap intervals over prompts (paired between models for ratios); any-frame rates carry Wilson "
        "intervals. M is the frame-level M-Score defined in docs/METHOD.md, section Measuring (our definition, not "
        "Forget-Me-Not's).</p>",
        f"<p class=caveat><b>Threat model.</b> {html.escape(THREAT_MODEL)}</p>",
        "<h2>Headline</h2>",
        _headline_table(metrics, kinds),
        _notes(metrics, kinds),
        _collateral(metrics, [k for k in kinds if k != "video_mp4"]),
        _attacks(metrics),
        _correction(metrics, [k for k in kinds if k != "video_mp4"]),
    ]
    if "video_mp4" in metrics:
        parts.append(DECODED_NOTE)
    for kind in [k for k in kinds if k != "video_mp4"]:
        parts.append(f"<h2>{kind.capitalize()}s: per concept</h2>")
        undefined = metrics[kind].get("undefined_concepts") or []
        if undefined:
            parts.append(f"<p>The original model never showed {html.escape(', '.join(undefined))}: nM is undefined "
                         "there and those concepts are left out of retention.</p>")  # fmt: skip
        parts.append(_concept_table(metrics[kind]))
        parts.append(_floor_table(metrics[kind]))
        animated = kind in ("video", "animatediff")
        parts.append(f"<h3>{'Side-by-side GIFs' if animated else 'Before / after'}: same prompts and seeds</h3>")
        parts.append(_gallery(gallery.get(kind, []), animated))
        if animated:
            parts.append(
                "<h3>Hit rate over the frames</h3><p>The share of videos whose frame t the detector labels as the "
                "concept (solid: the target; dashed: the mean over retained concepts).</p>"
                + _frame_plot(metrics[kind])
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, metrics: dict, gallery: dict[str, list[dict]]) -> Path:
    """Write report.html; returns its path."""
    path = Path(path)
    path.write_text(render_report(metrics, gallery), encoding="utf-8")
    return path
