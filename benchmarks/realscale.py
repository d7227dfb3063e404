"""Cost of erasing a concept and generating a 16-frame video at the real model shapes (random stand-ins).

    python benchmarks/realscale.py --device cpu --steps 2 --opt-steps 2 --eval-timesteps 1
    python benchmarks/realscale.py --device cuda --dtype float16              # the full defaults on a GPU

What runs: `erase_concept` on a randomly initialised SD 2.1-base-shaped pipeline (865M-parameter UNet,
340M-parameter encoder): 4 shots generated at 512x512, then gradient ascent; the checkpoint is saved and
swapped into a ModelScope-shaped video pipeline (1.41B-parameter UNet3D), which generates one 16-frame
256x256 video. Stand-ins are random, so only time and memory mean anything here; how many optimisation steps
the loss-ratio stop rule takes on real weights is not measured (reported for 10 steps, the published budget,
and for the 200-step cap).

What is measured and what is extrapolated: the run uses `--steps` denoising steps (shots and video),
`--opt-steps` optimisation steps and `--eval-timesteps` stop-rule timesteps; every UNet call is timed.
The defaults (25 denoising steps, 8 stop-rule timesteps, a check every 5 steps) are then extrapolated
linearly from the per-call costs: fixed part + per-UNet-call cost x calls. Memory is the measured peak
(GPU: `torch.cuda.max_memory_allocated`; CPU: the process's resident set, sampled every 20 ms); more steps
do not raise it. The JSON under benchmarks/results/ keeps both, labelled.

With `--tensor-memory` the bytes of live tensor storage are also counted op by op (`TensorMemory`): the
memory a GPU would need, measured on any device, so a CPU run answers the GPU-memory question too. It adds
a Python call to every op, so take times from a run without it:

    python benchmarks/realscale.py --device cpu --dtype bfloat16 --unet-checkpointing --encoder-checkpointing \
        --vae-slicing --tensor-memory --steps 1 --opt-steps 2 --eval-timesteps 1 --no-load --out memory.json

Goals it reports against: peak GPU memory <= 8 GiB and <= 30 s end to end on an H100-class GPU.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from t2v_unlearn.encoders import EraseConfig, erase_concept, load_text_encoder, save_checkpoint
from t2v_unlearn.encoders.checkpoint import versions
from t2v_unlearn.encoders.erase import CHECK_TIMESTEPS, SHOT_STEPS
from t2v_unlearn.pipelines import generate as generate_module
from t2v_unlearn.pipelines.load import load_pipeline
from t2v_unlearn.pipelines.standins import build_standin, parameter_counts, save_standin

ROOT = Path(__file__).resolve().parent.parent

GIB = 1024**3
DEFAULTS = EraseConfig()
# where the defaults depend on the concept's category, the costliest category's (objects'): an upper bound
DEFAULT_SHOT_STEPS, DEFAULT_CHECK_TIMESTEPS = max(SHOT_STEPS.values()), max(CHECK_TIMESTEPS.values())
GOAL_PEAK_GIB, GOAL_SECONDS = 8.0, 30.0
PUBLISHED_STEPS = 10  # Fuchi & Takagi: 4-5 epochs over 4 images at batch 2, about 8-10 optimiser steps


@dataclass
class BenchConfig:
    """Every knob of the benchmark; saved in the result JSON."""

    device: str = field(default="cpu", metadata={"help": "cpu or cuda[:N]"})
    dtype: str = field(default="float32", metadata={"help": "dtype of the frozen UNet, VAE and encoder"})
    steps: int = field(default=2, metadata={"help": "denoising steps run for the shots and the video"})
    opt_steps: int = field(default=2, metadata={"help": "optimisation steps run"})
    eval_timesteps: int = field(default=1, metadata={"help": "stop-rule timesteps per shot in the run"})
    frames: int = field(default=16, metadata={"help": "video frames"})
    image_base: str = field(default="sd-2.1-base", metadata={"help": "registered image base to stand in for"})
    video_base: str = field(default="modelscope-1.7b", metadata={"help": "registered video base to stand in for"})
    scale: str = field(default="real", metadata={"help": "real, or reduced for a smoke test"})
    load: bool = field(default=True, metadata={"help": "save each stand-in (fp16) and time load_pipeline on it"})
    unet_checkpointing: bool = field(default=False, metadata={"help": "recompute frozen-UNet activations"})
    encoder_checkpointing: bool = field(default=False, metadata={"help": "recompute encoder activations"})
    vae_slicing: bool = field(default=False, metadata={"help": "decode images/frames one at a time"})
    offload: bool = field(default=False, metadata={"help": "GPU: idle VAE and original encoder wait in CPU memory"})
    tensor_memory: bool = field(default=False, metadata={"help": "count live tensor bytes op by op (slower)"})
    concept: str = field(default="snoopy", metadata={"help": "the concept erased (literature prompt templates)"})


# --- measuring -----------------------------------------------------------------------------------------------


class MemorySampler:
    """Samples the process's resident set (and allocated GPU memory) every 20 ms, for per-phase peaks."""

    def __init__(self, device: torch.device, interval: float = 0.02):
        self.device, self.interval = device, interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * self._page
        except OSError:  # not Linux: fall back to the all-time peak
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self):
        while not self._stop.is_set():
            gpu = torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0
            self.samples.append((time.perf_counter(), self._rss(), gpu))
            time.sleep(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()

    def peak(self, start: float, end: float) -> dict:
        window = [s for s in self.samples if start <= s[0] <= end] or self.samples[-1:]
        return {"peak_rss_gib": round(max(s[1] for s in window) / GIB, 3),
                **({"peak_gpu_sampled_gib": round(max(s[2] for s in window) / GIB, 3)}
                   if self.device.type == "cuda" else {})}  # fmt: skip


class TensorMemory(TorchDispatchMode):
    """Bytes of live tensor storage and their peak, counted op by op on any device (a CPU run included).

    What a GPU's caching allocator must hold at least (`torch.cuda.max_memory_allocated` counts the same
    storages, rounded up to 512-byte blocks, plus cuBLAS/cuDNN workspaces), independent of the CPU
    allocator's fragmentation, the Python interpreter and imported libraries that a process's RSS includes.
    Tensors made before the mode starts count only if passed in (`track`). Costs a Python call per op.
    """

    def __init__(self, resolution: int = 4 * 2**20):
        super().__init__()
        self.live, self.current, self.peak = {}, 0, 0
        self.timeline, self.resolution = [(time.perf_counter(), 0)], resolution  # (when, bytes) on big moves

    def track(self, *objects):
        for obj in objects:
            tensors = [*obj.parameters(), *obj.buffers()] if isinstance(obj, torch.nn.Module) else [obj]
            for tensor in tensors:
                self._add(tensor)
        return self

    def reset_peak(self):
        self.peak = self.current

    def _add(self, tensor):
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = (str(storage.device), storage.data_ptr())
        if storage.data_ptr() == 0 or key in self.live:
            return
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        if self.current > self.peak:
            self.peak = self.current
        self._note()
        weakref.finalize(storage, self._free, key)

    def _free(self, key):
        self.current -= self.live.pop(key, 0)
        self._note()

    def _note(self):
        if abs(self.current - self.timeline[-1][1]) >= self.resolution or self.current >= self.peak:
            self.timeline.append((time.perf_counter(), self.current))

    def window_peak(self, start: float, end: float) -> dict:
        """{"peak_tensor_gib": ...} between two perf_counter times (to `resolution`)."""
        before = [b for t, b in self.timeline if t < start][-1:]
        inside = [b for t, b in self.timeline if start <= t <= end]
        return {"peak_tensor_gib": round(max(before + inside) / GIB, 3)}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            self._add(tensor)
        return out


class UNetCalls:
    """Times every UNet forward (CUDA-synchronised), labelled with the phase it ran in."""

    def __init__(self, device: torch.device):
        self.device, self.calls, self.phase = device, [], "other"
        self._handles, self._start = [], None

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def attach(self, unet):
        def before(module, args, kwargs):
            self._sync()
            self._start = time.perf_counter()

        def after(module, args, kwargs, output):
            self._sync()
            sample = args[0] if args else kwargs["sample"]
            self.calls.append({"phase": self.phase, "seconds": time.perf_counter() - self._start,
                               "batch": int(sample.shape[0]), "grad": torch.is_grad_enabled(),
                               "end": time.perf_counter()})  # fmt: skip

        self._handles = [unet.register_forward_pre_hook(before, with_kwargs=True),
                         unet.register_forward_hook(after, with_kwargs=True)]  # fmt: skip
        return self

    def detach(self):
        for handle in self._handles:
            handle.remove()

    def select(self, phase: str | None = None, grad: bool | None = None, start=-math.inf, end=math.inf) -> list:
        return [c for c in self.calls if (phase is None or c["phase"] == phase) and (grad is None or c["grad"] == grad)
                and start <= c["end"] <= end]  # fmt: skip


class Phases:
    """Wall time and peak memory of named phases."""

    def __init__(self, device: torch.device, sampler: MemorySampler, tensors: TensorMemory | None = None):
        self.device, self.sampler, self.tensors, self.results = device, sampler, tensors, {}

    @contextmanager
    def __call__(self, name: str):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        record = {"start": start}
        yield record
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        end = time.perf_counter()
        record.update(seconds=round(end - start, 3), end=end, **self.sampler.peak(start, end))
        if self.tensors is not None:
            record.update(self.tensors.window_peak(start, end))
        if self.device.type == "cuda":
            record["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(self.device) / GIB, 3)
        self.results[name] = record


def _scheduler_calls(pipe, steps: int) -> int:
    """How many UNet calls a pipeline's scheduler makes for `steps` denoising steps (PNDM adds one)."""
    scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)


def _seconds(calls: list) -> float:
    return sum(c["seconds"] for c in calls)


def _per_call(calls: list) -> float:
    """Seconds per UNet call, leaving out the first (one-time kernel set-up) when there are others."""
    warm = calls[1:] or calls
    return _seconds(warm) / len(warm)


def _collect():
    """Return freed memory (drop the references first), so the next phase's peak is its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load_or_build(name: str, config: BenchConfig, dtype, device, phases: Phases, prefix: str, workdir: Path):
    """A stand-in on the device: built in memory; with `load`, also written as fp16 files and loaded back."""
    with phases(f"{prefix}_build"):
        pipe = build_standin(name, scale=config.scale, dtype=torch.float16 if config.load else dtype)
    if not config.load:
        return pipe.to(device)
    folder = workdir / name
    with phases(f"{prefix}_write_fp16"):
        save_standin(pipe, folder)
    pipe = None
    _collect()
    with phases(f"{prefix}_load"):
        pipe = load_pipeline("image" if prefix == "image" else "video", folder, device=device, dtype=dtype,
                             progress=False)  # fmt: skip
    shutil.rmtree(folder)
    return pipe


# --- the benchmark -------------------------------------------------------------------------------------------


def run(config: BenchConfig) -> dict:
    device, dtype = torch.device(config.device), getattr(torch, config.dtype)
    sampler = MemorySampler(device).start()
    tensors = TensorMemory() if config.tensor_memory else None
    phases = Phases(device, sampler, tensors)
    if tensors is not None:
        tensors.__enter__()
    workdir = Path(tempfile.mkdtemp(prefix="realscale-"))
    result = {"config": asdict(config)}
    try:
        # 1. the image pipeline, and erasing with every UNet call timed
        image = _load_or_build(config.image_base, config, dtype, device, phases, "image", workdir)
        if tensors is not None:  # loaded files may bypass the dispatcher: count the weights explicitly
            tensors.track(image.unet, image.vae, image.text_encoder)
        image.set_progress_bar_config(disable=True)
        if config.vae_slicing:
            image.vae.enable_slicing()
        result["parameters"] = {"image": parameter_counts(image)}
        # the ascent objective: its check calls are what the cost model below separates from training calls
        erase_config = EraseConfig(objective="ascent", num_shots=4, shot_steps=config.steps,
                                   max_steps=config.opt_steps, stop_rule="max-steps", check_every=config.opt_steps,
                                   eval_timesteps=config.eval_timesteps,
                                   gradient_checkpointing=config.encoder_checkpointing,
                                   unet_checkpointing=config.unet_checkpointing, offload=config.offload)  # fmt: skip
        calls = UNetCalls(device).attach(image.unet)
        original = generate_module.generate_images

        def labelled(*args, **kwargs):
            calls.phase = "shot_generation"
            try:
                return original(*args, **kwargs)
            finally:
                calls.phase = "other"

        generate_module.generate_images = labelled
        try:
            with phases("erase") as erase_phase:
                erased = erase_concept(image, [config.concept], erase_config, progress=False)
        finally:
            generate_module.generate_images = original
            calls.detach()
        result["erase_timings"] = erased.timings
        result["erase_subphases"] = _erase_subphases(erase_phase["start"], erased.timings, sampler, tensors)
        with phases("save"):
            checkpoint = save_checkpoint(workdir / "erased", erased, image.text_encoder, image.tokenizer,
                                         erase_config, config.image_base, {})  # fmt: skip
        result["checkpoint_mib"] = round(sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file()) / 2**20)
        erase_costs = _erase_costs(image, erased, calls, erase_phase["start"], erase_config)
        image = erased = None
        _collect()

        # 2. the video pipeline with the unlearned encoder swapped in, one video
        video = _load_or_build(config.video_base, config, dtype, device, phases, "video", workdir)
        if tensors is not None:
            tensors.track(video.unet, video.vae, video.text_encoder)
        video.set_progress_bar_config(disable=True)
        if config.vae_slicing:
            video.vae.enable_slicing()
        result["parameters"]["video"] = parameter_counts(video)
        with phases("swap"):
            swapped = load_text_encoder(checkpoint, base=video.text_encoder, tokenizer=video.tokenizer,
                                        base_name=f"{config.video_base} stand-in")  # fmt: skip
            video.text_encoder = swapped.to(device, dtype)
        calls = UNetCalls(device).attach(video.unet)
        calls.phase = "video"
        with phases("video_generate"):
            frames = generate_module.generate_videos(video, [f"a video of {config.concept} running"], [0],
                                                     steps=config.steps, num_frames=config.frames)  # fmt: skip
        calls.detach()
        result["video_shape"] = list(frames.shape)
        video_calls = calls.select("video")
        per_call = _per_call(video_calls)
        fixed = phases.results["video_generate"]["seconds"] - per_call * len(video_calls)
        video_costs = {"unet_calls": len(video_calls), "unet_seconds_per_call": round(per_call, 3),
                       "unet_batch": video_calls[0]["batch"], "fixed_seconds": round(fixed, 3),
                       "default_steps": generate_module.DEFAULT_STEPS,
                       "default_unet_calls": _scheduler_calls(video, generate_module.DEFAULT_STEPS)}  # fmt: skip
        video_costs["generate_default_seconds"] = round(fixed + per_call * video_costs["default_unet_calls"], 1)
        video = None
        _collect()
    finally:
        if tensors is not None:
            tensors.__exit__(None, None, None)
        sampler.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    result["phases"] = {
        k: {n: v for n, v in r.items() if n not in ("start", "end")} for k, r in phases.results.items()
    }
    result["erase_costs"], result["video_costs"] = erase_costs, video_costs
    result["extrapolated"] = _extrapolate(result)
    result["flops"] = flop_budget(config)
    rate = result["flops"]["tflop_per_unit"]["shot_unet_call_batch8"] / erase_costs["shot_unet_seconds_per_call"]
    result["flops"]["achieved_tflops_shot_unet"] = round(rate, 3)
    result["peak_rss_gib_all_time"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    return result


def _erase_subphases(start: float, timings: dict, sampler: MemorySampler, tensors: TensorMemory | None) -> dict:
    """Peak memory inside erase_concept's own phases (shots, setup, optimise), from their durations."""
    out, t = {}, start
    for name in ("shots", "setup", "optimise"):
        out[name] = {"seconds": timings[name], **sampler.peak(t, t + timings[name])}
        if tensors is not None:
            out[name].update(tensors.window_peak(t, t + timings[name]))
        t += timings[name]
    return out


def _step_seconds(training: list, optimise_seconds: float) -> float:
    """One warm optimisation step: from one training forward to the next (backward and Adam included)."""
    if len(training) < 2:
        return optimise_seconds  # one step: its one-time set-up is included
    return (training[-1]["end"] - training[0]["end"]) / (len(training) - 1)


def _erase_costs(pipe, erased, calls: UNetCalls, start: float, config: EraseConfig) -> dict:
    """Per-call and per-step costs of erasing, from the timed UNet calls."""
    timings = erased.timings
    generation = calls.select("shot_generation")
    optimise_start = start + timings["shots"] + timings["setup"]
    setup_checks = calls.select("other", grad=False, end=optimise_start)
    optimise_checks = calls.select("other", grad=False, start=optimise_start)
    training = calls.select("other", grad=True)
    check_seconds = _per_call(setup_checks + optimise_checks)
    return {
        "shot_unet_calls": len(generation),
        "shot_unet_batch": generation[0]["batch"],
        "shot_unet_seconds_per_call": round(_per_call(generation), 3),
        "shots_fixed_seconds": round(timings["shots"] - _per_call(generation) * len(generation), 3),
        "default_shot_unet_calls": _scheduler_calls(pipe, DEFAULT_SHOT_STEPS),
        "check_unet_batch": setup_checks[0]["batch"],
        "check_seconds_run": round(check_seconds, 3),
        "setup_fixed_seconds": round(timings["setup"] - check_seconds * len(setup_checks), 3),
        "setup_checks": len(setup_checks),
        "optimise_steps": erased.steps,
        "training_unet_batch": training[0]["batch"],
        "step_seconds": round(_step_seconds(training, timings["optimise"] - check_seconds * len(optimise_checks)), 3),
        "eval_timesteps_run": config.eval_timesteps,
    }


def _extrapolate(result: dict) -> dict:
    """Erase and video cost at the default settings, linear in UNet calls and in stop-rule batch size."""
    costs, phases = result["erase_costs"], result["phases"]
    check_default = costs["check_seconds_run"] * DEFAULT_CHECK_TIMESTEPS / costs["eval_timesteps_run"]
    shots = costs["shots_fixed_seconds"] + costs["shot_unet_seconds_per_call"] * costs["default_shot_unet_calls"]
    setup = costs["setup_fixed_seconds"] + costs["setup_checks"] * check_default
    load = phases.get("image_load", phases["image_build"])["seconds"]
    video_load = phases.get("video_load", phases["video_build"])["seconds"]
    out = {"assumptions": f"shots at {DEFAULT_SHOT_STEPS} denoising steps, stop rule on {DEFAULT_CHECK_TIMESTEPS} "
           f"timesteps per shot checked every {DEFAULTS.check_every} steps, UNet cost linear in calls and in batch; "
           f"video at {result['video_costs']['default_steps']} steps; load = "
           f"{'load_pipeline from fp16 files' if 'image_load' in phases else 'building the stand-in'}"}  # fmt: skip
    for steps in (PUBLISHED_STEPS, DEFAULTS.max_steps):
        optimise = steps * costs["step_seconds"] + math.ceil(steps / DEFAULTS.check_every) * check_default
        erase = load + shots + setup + optimise + phases["save"]["seconds"]
        video = video_load + phases["swap"]["seconds"] + result["video_costs"]["generate_default_seconds"]
        out[f"{steps}_steps"] = {"load": round(load, 1), "shots": round(shots, 1), "setup": round(setup, 1),
                                 "optimise": round(optimise, 1), "save": phases["save"]["seconds"],
                                 "erase_total": round(erase, 1), "video_total": round(video, 1),
                                 "erase_plus_video": round(erase + video, 1)}  # fmt: skip
    return out


# --- arithmetic ------------------------------------------------------------------------------------------------


def flop_budget(config: BenchConfig) -> dict:
    """FLOPs of each unit of work at the benchmark's shapes, counted on the meta device (no memory, no compute).

    The totals at the default settings are hardware-independent: divide by a device's sustained rate.
    """
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet3DConditionModel
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPTextConfig, CLIPTextModel

    from t2v_unlearn.encoders.trainable import trainable_parameter_names
    from t2v_unlearn.pipelines.registry import get_base
    from t2v_unlearn.pipelines.standins import standin_configs

    image, video = standin_configs(config.image_base, config.scale), standin_configs(config.video_base, config.scale)
    size, frames_size = image["unet"]["sample_size"], video["unet"]["sample_size"]
    shots, batch, width = 4, DEFAULTS.batch_size, image["text_encoder"]["hidden_size"]

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 1e12

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(image["unet"]).requires_grad_(False)
        unet3d = UNet3DConditionModel.from_config(video["unet"]).requires_grad_(False)
        vae = AutoencoderKL.from_config(image["vae"])
        encoder = CLIPTextModel(CLIPTextConfig(**image["text_encoder"])).requires_grad_(False)
        for name, parameter in encoder.named_parameters():
            parameter.requires_grad_(name in set(trainable_parameter_names(encoder, DEFAULTS.trainable)))

        def unet_call(n, grad=False):
            hidden = torch.randn(n, 77, width, requires_grad=grad)
            out = unet(torch.randn(n, 4, size, size), torch.full((n,), 500), hidden).sample
            if grad:
                out.pow(2).mean().backward()

        def encoder_step(n):
            encoder(torch.zeros(n, 77, dtype=torch.long))[0].pow(2).mean().backward()

        per = {
            "shot_unet_call_batch8": count(lambda: unet_call(2 * shots)),
            "vae_decode_image": count(lambda: vae.decode(torch.randn(1, 4, size, size))),
            "vae_encode_image": count(lambda: vae.encode(torch.randn(1, 3, 8 * size, 8 * size))),
            "check_unet_call_default": count(lambda: unet_call(shots * DEFAULT_CHECK_TIMESTEPS)),
            "train_unet_fwd_bwd_batch4": count(lambda: unet_call(batch, grad=True)),
            "train_encoder_fwd_bwd": count(lambda: encoder_step(batch + DEFAULTS.preserve_batch)),
            "video_unet_call_batch2": count(lambda: unet3d(torch.randn(2, 4, config.frames, frames_size, frames_size),
                                                           torch.full((2,), 500), torch.randn(2, 77, width))),
            "vae_decode_frame": count(lambda: vae.decode(torch.randn(1, 4, frames_size, frames_size))),
        }  # fmt: skip
    base = get_base(config.image_base)
    scheduler = getattr(diffusers, base.scheduler_class).from_config(base.scheduler)
    scheduler.set_timesteps(DEFAULT_SHOT_STEPS)
    shot_calls = len(scheduler.timesteps)  # PNDM, SD 2.1-base's own scheduler, adds one call
    shots_total = shot_calls * per["shot_unet_call_batch8"] + shots * (
        per["vae_decode_image"] + per["vae_encode_image"]
    )
    step = per["train_unet_fwd_bwd_batch4"] + per["train_encoder_fwd_bwd"]
    video = generate_module.DEFAULT_STEPS * per["video_unet_call_batch2"] + config.frames * per["vae_decode_frame"]
    totals = {}
    for steps in (PUBLISHED_STEPS, DEFAULTS.max_steps):
        checks = 2 + math.ceil(steps / DEFAULTS.check_every)
        erase = shots_total + steps * step + checks * per["check_unet_call_default"]
        totals[f"{steps}_steps"] = {"erase_tflop": round(erase, 1), "video_tflop": round(video, 1)}
    return {"tflop_per_unit": {k: round(v, 3) for k, v in per.items()}, "tflop_at_defaults": totals,
            "counted": "torch.utils.flop_counter (matmuls, convolutions, attention) on the meta device; "
                       "elementwise ops, norms and prompt encoding for generation not counted"}  # fmt: skip


# --- report --------------------------------------------------------------------------------------------------


def summary(result: dict) -> str:
    config, phases, extrapolated = result["config"], result["phases"], result["extrapolated"]
    gpu = config["device"].startswith("cuda")
    memory_key = "peak_gpu_gib" if gpu else "peak_rss_gib"
    lines = [f"realscale on {result['machine']['device_name']} ({config['dtype']}, {config['scale']} shapes): "
             f"image {config['image_base']}, video {config['video_base']} {config['frames']} frames",
             f"measured with {config['steps']} denoising steps, {config['opt_steps']} optimisation steps, "
             f"{config['eval_timesteps']} stop-rule timestep(s):"]  # fmt: skip

    def tensors(record):
        return f"   tensors {record['peak_tensor_gib']:6.2f} GiB" if "peak_tensor_gib" in record else ""

    for name, record in phases.items():
        lines.append(f"  {name:<18} {record['seconds']:>9.1f} s   peak {record.get(memory_key, 0):6.2f} GiB"
                     + tensors(record))  # fmt: skip
    for name, record in result["erase_subphases"].items():
        lines.append(f"    erase.{name:<12} {record['seconds']:>9.1f} s   peak {record['peak_rss_gib']:6.2f} GiB RSS"
                     + tensors(record))  # fmt: skip
    costs, video = result["erase_costs"], result["video_costs"]
    lines.append(f"  per UNet call: shots (batch {costs['shot_unet_batch']}) {costs['shot_unet_seconds_per_call']} s, "
                 f"stop-rule check (batch {costs['check_unet_batch']}) {costs['check_seconds_run']} s, "
                 f"video (batch {video['unet_batch']}x{config['frames']} frames) {video['unet_seconds_per_call']} s; "
                 f"an optimisation step (batch {costs['training_unet_batch']}) {costs['step_seconds']} s")  # fmt: skip
    lines.append(f"extrapolated to the defaults ({extrapolated['assumptions']}):")
    for key in (f"{PUBLISHED_STEPS}_steps", f"{DEFAULTS.max_steps}_steps"):
        e = extrapolated[key]
        lines.append(f"  {key.replace('_', ' ')}: erase {e['erase_total']} s (load {e['load']}, shots {e['shots']}, "
                     f"setup {e['setup']}, optimise {e['optimise']}, save {e['save']}); video {e['video_total']} s; "
                     f"both {e['erase_plus_video']} s")  # fmt: skip
    flops = result["flops"]
    for key, total in flops["tflop_at_defaults"].items():
        lines.append(f"  arithmetic at the defaults, {key.replace('_', ' ')}: erase {total['erase_tflop']} TFLOP, "
                     f"video {total['video_tflop']} TFLOP (this device: {flops['achieved_tflops_shot_unet']} TFLOP/s "
                     "in the shot UNet calls)")  # fmt: skip
    peak = max(r.get(memory_key, 0) for r in phases.values())
    goal = result["goals"]
    lines.append(f"goals: peak GPU memory <= {GOAL_PEAK_GIB} GiB, <= {GOAL_SECONDS} s end to end on an H100-class "
                 f"GPU. {goal['verdict']} (peak here {peak:.2f} GiB {'GPU' if gpu else 'RSS'})")  # fmt: skip
    return "\n".join(lines)


def _goals(result: dict) -> dict:
    config, phases = result["config"], result["phases"]
    if not config["device"].startswith("cuda"):
        verdict = {"verdict": "Time not assessable here: measured on a CPU (CPU seconds), not a GPU."}
        counted = [r["peak_tensor_gib"] for r in phases.values() if "peak_tensor_gib" in r]
        if counted:
            peak = max(counted)
            verdict["peak_tensor_gib"] = peak
            verdict["verdict"] += (f" Tensor memory counted op by op peaks at {peak:.2f} GiB: a GPU would need at "
                                   f"least that ({'within' if peak <= GOAL_PEAK_GIB else 'OVER'} the "
                                   f"{GOAL_PEAK_GIB:.0f} GiB goal, before CUDA workspaces).")  # fmt: skip
        return verdict
    peak = max(r["peak_gpu_gib"] for r in phases.values())
    seconds = result["extrapolated"][f"{PUBLISHED_STEPS}_steps"]["erase_plus_video"]
    return {"peak_gpu_gib": peak, "erase_plus_video_seconds_10_steps": seconds,
            "memory_met": peak <= GOAL_PEAK_GIB, "time_met": seconds <= GOAL_SECONDS,
            "verdict": f"memory {'met' if peak <= GOAL_PEAK_GIB else 'NOT met'}, time "
                       f"{'met' if seconds <= GOAL_SECONDS else 'NOT met'} ({seconds} s, 10 steps)"}  # fmt: skip


def machine(device: torch.device) -> dict:
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version()}  # fmt: skip
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = f"CPU ({cpu}, {torch.get_num_threads()} threads)"
    return info


def parse_args(argv=None) -> tuple[BenchConfig, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                        help="dtype of the frozen models (default: float16 on cuda, float32 on cpu)")  # fmt: skip
    parser.add_argument("--steps", type=int, help="denoising steps run for shots and video (default: 25 on cuda, "
                        "2 on cpu; the rest is extrapolated)")  # fmt: skip
    parser.add_argument("--opt-steps", type=int, help="optimisation steps run (default: 10 on cuda, 2 on cpu)")
    parser.add_argument("--eval-timesteps", type=int, help="stop-rule timesteps per shot run (default: 8 on cuda, "
                        "1 on cpu)")  # fmt: skip
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--image-base", default="sd-2.1-base")
    parser.add_argument("--video-base", default="modelscope-1.7b")
    parser.add_argument("--scale", choices=["real", "reduced"], default="real", help="reduced: a smoke test")
    parser.add_argument("--no-load", action="store_true", help="skip writing and loading the fp16 files")
    parser.add_argument("--unet-checkpointing", action="store_true", help="gradient checkpointing in the frozen UNet")
    parser.add_argument("--encoder-checkpointing", action="store_true", help="gradient checkpointing in the encoder")
    parser.add_argument("--vae-slicing", action="store_true", help="VAE decodes one image or frame at a time")
    parser.add_argument("--tensor-memory", action="store_true", help="also count live tensor bytes op by op: the "
                        "memory a GPU would need, measured on any device (adds Python overhead to every op, so "
                        "use a separate run for times)")  # fmt: skip
    parser.add_argument("--offload", action="store_true", help="erase: the idle VAE and original encoder wait in "
                        "CPU memory (GPU only)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/realscale-<device>-<dtype>"
                        ".json; with --scale reduced nothing is written unless given)")  # fmt: skip
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        parser.error(f"--device {args.device} asked for, but no CUDA GPU is visible; use --device cpu")
    config = BenchConfig(
        device=args.device,
        dtype=args.dtype or ("float16" if gpu else "float32"),
        steps=args.steps or (DEFAULT_SHOT_STEPS if gpu else 2),
        opt_steps=args.opt_steps or (PUBLISHED_STEPS if gpu else 2),
        eval_timesteps=args.eval_timesteps or (DEFAULT_CHECK_TIMESTEPS if gpu else 1),
        frames=args.frames,
        image_base=args.image_base,
        video_base=args.video_base,
        scale=args.scale,
        load=not args.no_load,
        unet_checkpointing=args.unet_checkpointing,
        encoder_checkpointing=args.encoder_checkpointing,
        vae_slicing=args.vae_slicing,
        offload=args.offload,
        tensor_memory=args.tensor_memory,
    )
    if min(config.steps, config.opt_steps, config.eval_timesteps, config.frames) < 1:
        parser.error("--steps, --opt-steps, --eval-timesteps and --frames must be at least 1")
    out = args.out
    if out is None and config.scale == "real":
        out = ROOT / "benchmarks" / "results" / f"realscale-{config.device.split(':')[0]}-{config.dtype}.json"
    return config, out


def main(argv=None) -> int:
    config, out = parse_args(argv)
    started = time.perf_counter()
    result = run(config)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = machine(torch.device(config.device))
    result["goals"] = _goals(result)
    result["command"] = "python benchmarks/realscale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result["versions"] = versions()
    result["note"] = ("random stand-ins of the real shapes: time and memory only. 'phases' are measured; "
                      "'extrapolated' scales the measured per-UNet-call costs to the default settings.")  # fmt: skip
    print(summary(result))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
