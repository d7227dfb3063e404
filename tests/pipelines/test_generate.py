import numpy as np
import pytest
from diffusers import DPMSolverMultistepScheduler

from t2v_unlearn.pipelines.generate import generate_images, sampler


def test_sampler_swaps_the_scheduler_and_restores_it(image_pipe):
    original = image_pipe.scheduler
    with sampler(image_pipe, "dpm-solver") as pipe:
        assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
        assert pipe.scheduler.config.beta_schedule == original.config.beta_schedule  # the same noise schedule
        fast = generate_images(pipe, ["zorbo"], [0], steps=10)
    assert image_pipe.scheduler is original
    with sampler(image_pipe, "pipeline"):
        assert image_pipe.scheduler is original
        slow = generate_images(image_pipe, ["zorbo"], [0], steps=10)
    assert fast.shape == slow.shape and not np.array_equal(fast, slow)  # a different solver, a different path


def test_sampler_restores_on_error_and_names_the_choices(image_pipe):
    original = image_pipe.scheduler
    with pytest.raises(RuntimeError), sampler(image_pipe, "unipc"):
        raise RuntimeError("boom")
    assert image_pipe.scheduler is original
    with pytest.raises(ValueError, match="dpm-solver"), sampler(image_pipe, "euler-ancestral"):
        pass
