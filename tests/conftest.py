import os

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def image_pipe():
    from t2v_unlearn.pipelines import load_pipeline

    return load_pipeline("image", progress=False)


@pytest.fixture(scope="session")
def video_pipe():
    from t2v_unlearn.pipelines import load_pipeline

    return load_pipeline("video", progress=False)
