"""Atomic outputs: an old output survives every failure, --overwrite deletes only this tool's folders."""

import json
import os
import stat

import pytest

from t2v_unlearn import artefacts
from t2v_unlearn.artefacts import (
    MARKER,
    OutputError,
    atomic_file,
    atomic_folder,
    atomic_write_text,
    validate_output,
)


def _write(out, text, overwrite=False, kind="output"):
    with atomic_folder(out, overwrite, kind=kind) as tmp:
        (tmp / "result.txt").write_text(text)
    return out


def _leftovers(out):
    """Hidden siblings an output may have: temporaries, set-aside old versions, the lock file."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_a_folder_is_written_whole_with_a_marker(tmp_path):
    out = _write(tmp_path / "deep" / "out", "one")
    assert (out / "result.txt").read_text() == "one"
    marker = json.loads((out / MARKER).read_text())
    assert marker["tool"] == "t2v_unlearn" and marker["kind"] == "output" and marker["created"]
    assert _leftovers(out) == []
    _write(out, "two", overwrite=True)
    assert (out / "result.txt").read_text() == "two" and _leftovers(out) == []


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failure_while_writing_keeps_the_old_output_and_no_temporary(tmp_path, error):
    out = _write(tmp_path / "out", "old")
    with pytest.raises(type(error)):
        with atomic_folder(out, overwrite=True) as tmp:
            (tmp / "result.txt").write_text("half")
            raise error
    assert (out / "result.txt").read_text() == "old" and _leftovers(out) == []


def _failing_rename(monkeypatch, fail_from: int):
    """`os.rename` that raises on call number `fail_from` (1-based) and every call after it."""
    real, calls = os.rename, []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) >= fail_from:
            raise OSError("injected failure")
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    return calls


def test_a_failure_between_old_aside_and_new_in_puts_the_old_output_back(tmp_path, monkeypatch):
    out = _write(tmp_path / "out", "old")
    calls = _failing_rename(monkeypatch, fail_from=2)  # 1: old aside, 2: new in (fails), 3: old back (fails too)
    with pytest.raises(OSError, match="injected"):
        _write(out, "new", overwrite=True)
    monkeypatch.undo()
    assert len(calls) == 3
    # the old version waits aside (the restoring rename failed too); nothing of it is lost
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    assert (aside / "result.txt").read_text() == "old" and not out.exists()
    # the next run for the same output puts it back before anything else, so it is not silently replaced
    with pytest.raises(FileExistsError, match="--overwrite"):
        _write(out, "other")
    assert (out / "result.txt").read_text() == "old" and _leftovers(out) == []


def test_a_failed_swap_is_undone_when_the_old_output_can_go_back(tmp_path, monkeypatch):
    out = _write(tmp_path / "out", "old")
    real, calls = os.rename, []

    def rename(src, dst):  # only the second rename (new in) fails
        calls.append(src)
        if len(calls) == 2:
            raise OSError("injected failure")
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="injected"):
        _write(out, "new", overwrite=True)
    monkeypatch.undo()
    assert (out / "result.txt").read_text() == "old" and _leftovers(out) == []


def test_existing_output_needs_overwrite(tmp_path):
    out = _write(tmp_path / "out", "old")
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        validate_output(out, overwrite=False)


def test_overwrite_refuses_the_working_folder_its_parents_and_the_root(tmp_path, monkeypatch):
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for out in (".", "..", "", str(work), str(tmp_path / "a"), str(tmp_path), "/", "sub/.."):
        with pytest.raises(OutputError, match="working folder, one of its parents, or the filesystem root"):
            validate_output(out, overwrite=True)
    assert work.is_dir() and (tmp_path / "a").is_dir()


def test_overwrite_refuses_a_file_and_a_folder_of_other_files(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(OutputError, match="is a file"):
        validate_output(notes, overwrite=True)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputError, match=f"did not write \\(no {MARKER} marker\\)"):
        with atomic_folder(photos, overwrite=True) as tmp:
            (tmp / "result.txt").write_text("new")
    assert notes.read_text() == "mine" and (photos / "cat.jpg").read_bytes() == b"\xff\xd8"
    assert _leftovers(photos) == []


def test_overwrite_accepts_older_checkpoints_and_empty_folders(tmp_path):
    older = tmp_path / "older"
    older.mkdir()
    (older / "unlearn.json").write_text("{}")  # an erase checkpoint from before the marker
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (older, empty):
        _write(out, "new", overwrite=True, kind="checkpoint")
        assert (out / "result.txt").read_text() == "new" and not (out / "unlearn.json").exists()


def test_overwrite_refuses_another_kind_of_output(tmp_path):
    checkpoint = _write(tmp_path / "ckpt", "weights", kind="checkpoint")
    older = tmp_path / "older"
    older.mkdir()
    (older / "unlearn.json").write_text("{}")
    for out in (checkpoint, older):
        with pytest.raises(OutputError, match="output of kind 'checkpoint', and this writes 'eval'"):
            _write(out, "metrics", overwrite=True, kind="eval")
    assert (checkpoint / "result.txt").read_text() == "weights" and (older / "unlearn.json").is_file()


def test_a_second_run_on_the_same_output_is_refused_and_the_first_completes(tmp_path):
    out = tmp_path / "out"
    with atomic_folder(out) as first:
        (first / "result.txt").write_text("first")
        with pytest.raises(OutputError, match="another run is writing"):
            with atomic_folder(out, overwrite=True) as second:
                (second / "result.txt").write_text("second")
        assert (first / "result.txt").read_text() == "first"
    assert (out / "result.txt").read_text() == "first" and _leftovers(out) == []


def test_unwritable_outputs_are_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    ran = []
    for out, message in ((blocker / "sub" / "out", f"{blocker} is a file, not a folder"),
                         (tmp_path / ("x" * 250), "name is too long")):  # fmt: skip
        with pytest.raises(OutputError, match=message):
            with atomic_folder(out) as tmp:
                ran.append(tmp)
    assert ran == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_validate_output_leaves_no_folders_behind(tmp_path):
    out = validate_output(tmp_path / "new" / "deeper" / "out")
    assert out.is_absolute() and list(tmp_path.iterdir()) == []


def test_a_killed_runs_temporary_folder_is_removed_by_the_next_run(tmp_path):
    dead = tmp_path / ".out.tmp-abcd1234"  # what mkdtemp made for a run killed mid-write
    dead.mkdir()
    unrelated = tmp_path / ".out.tmp-notours.txt"
    unrelated.write_text("keep")
    _write(tmp_path / "out", "new")
    assert not dead.exists() and unrelated.read_text() == "keep"


def test_a_work_folder_is_kept_for_resuming_unless_the_run_made_it_and_failed_on_input(tmp_path):
    out, work = tmp_path / "out", tmp_path / ".out.partial"
    with pytest.raises(ValueError):
        with atomic_folder(out, work=work) as tmp:
            (tmp / "sample.npy").write_text("1")
            raise ValueError("bad --steps")
    assert not work.exists()  # nothing worth resuming, and it would refuse the corrected rerun
    for error in (KeyboardInterrupt(), RuntimeError("out of memory")):
        with pytest.raises(type(error)):
            with atomic_folder(out, work=work) as tmp:
                (tmp / "sample.npy").write_text("1")
                raise error
        assert (work / "sample.npy").is_file()  # an interrupted run: the rerun resumes from here
    with pytest.raises(ValueError):
        with atomic_folder(out, work=work):
            raise ValueError("bad input in a resumed run")
    assert (work / "sample.npy").is_file()  # made by an earlier run: kept
    with atomic_folder(out, work=work) as tmp:
        assert tmp == work and (tmp / "sample.npy").is_file()
    assert (out / "sample.npy").is_file() and not work.exists()


def test_atomic_files(tmp_path):
    path = atomic_write_text(tmp_path / "metrics.json", "{}\n")
    assert path.read_text() == "{}\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with atomic_file(path) as tmp:
            assert tmp.suffix == ".json"
            tmp.write_text("{half")
            raise RuntimeError("killed")
    assert path.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


# --- the commands ----------------------------------------------------------------------------------------------


def _main(capsys, *argv):
    from t2v_unlearn.commands import main

    code = main(list(argv))
    return code, capsys.readouterr().err


def test_commands_refuse_bad_outputs_with_exit_2_and_no_traceback(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"cat")
    (tmp_path / "work").mkdir()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "unlearn.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "work")
    cases = [
        (["erase", "--concept", "zorbo", "--out", str(blocker / "out")], "is a file, not a folder"),
        (["erase", "--concept", "zorbo", "--out", "..", "--overwrite"], "working folder"),
        (["generate", "--prompt", "zorbo", "--out", str(photos), "--overwrite"], "did not write"),
        (["generate", "--prompt", " ", "--out", str(tmp_path / "g")], "--prompt is empty"),
        (["eval", "--videos", str(tmp_path), "--concept", "zorbo", "--out", ".", "--overwrite"], "working folder"),
        (["eval", "--videos", str(tmp_path), "--concept", "zorbo", "--out", str(ckpt), "--overwrite"], "'checkpoint'"),
    ]
    for argv, message in cases:
        code, err = _main(capsys, *argv)
        assert code == 2 and err.count("error: ") == 1 and message in err and "Traceback" not in err, (argv, err)
    assert (photos / "cat.jpg").read_bytes() == b"cat"
    # nothing written, nothing deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "ckpt", "photos", "work"]
    assert (ckpt / "unlearn.json").is_file()


def test_eval_that_failed_on_input_does_not_block_the_corrected_rerun(tmp_path, monkeypatch, capsys):
    import t2v_unlearn.commands.eval as eval_cli

    out, partial = tmp_path / "results", tmp_path / ".results.partial"
    argv = ["eval", "--videos", str(tmp_path / "missing"), "--concept", "zorbo", "--no-progress", "--out", str(out)]
    code, err = _main(capsys, *argv, "--seed", "5")
    assert code == 2 and "is not a folder" in err and not partial.exists()
    code, err = _main(capsys, *argv)  # other seed: before, "holds an interrupted evaluation with different seed"
    assert code == 2 and "is not a folder" in err and "interrupted" not in err

    def interrupted(config, folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_cli, "evaluate_video_files", interrupted)
    code, err = _main(capsys, *argv, "--seed", "5")
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert (partial / "eval_config.json").is_file()  # a genuine interruption stays resumable
    code, err = _main(capsys, *argv)
    assert code == 2 and "interrupted evaluation with different seed" in err and partial.is_dir()


def test_the_module_needs_only_the_standard_library():
    import ast
    import sys

    names = set()
    for node in ast.walk(ast.parse(open(artefacts.__file__).read())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, "no relative imports"
            names.add(node.module.split(".")[0])
    assert names - {"__future__"} <= sys.stdlib_module_names
