"""The packages' imports point one way: tinyworld -> pipelines -> encoders -> eval -> commands."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "t2v_unlearn"
ORDER = ["tinyworld", "pipelines", "encoders", "eval", "commands"]


def imported_packages(source: str, here: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, top-level t2v_unlearn package) of every import in a module at `here` (its path's parts inside
    t2v_unlearn), inside functions too."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:  # relative: resolve against the module's package
            base = list(here[:-1])[: len(here) - node.level] if node.level > 1 else list(here[:-1])
            parts = [*base, *(node.module.split(".") if node.module else [])]
            names = [parts[0]] if parts else [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("t2v_unlearn."):
            names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("t2v_unlearn.")]
        else:
            continue
        found += [(node.lineno, name) for name in names]
    return found


def test_no_package_imports_a_higher_layer():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2 or parts[0] not in ORDER:
            continue  # top-level helpers (artefacts, spelling, config_args) and __main__
        rank = ORDER.index(parts[0])
        for line, name in imported_packages(path.read_text(), parts):
            if name in ORDER and ORDER.index(name) > rank:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {name}")
    assert not upward, upward


def test_the_checker_sees_every_form_of_import():
    # the rule above would be vacuous if the parser missed a form: check it on a module written for the purpose
    source = """
from ..encoders.checkpoint import load_text_encoder
from .load import load_pipeline
from . import registry
import t2v_unlearn.eval.metrics
from t2v_unlearn.tinyworld import render


def later():
    from ..commands import main
"""
    names = [name for _, name in imported_packages(source, ("pipelines", "example.py"))]
    assert names == ["encoders", "pipelines", "pipelines", "eval", "tinyworld", "commands"], names
