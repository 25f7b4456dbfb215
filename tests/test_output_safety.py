"""Output safety (sparrow.output), atomic temporaries of killed runs, pre-load argument checks, thread policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparrow.atomic import atomic_dir, atomic_file, remove_stale_temps, temp_owner
from sparrow.checks import check_device, check_key_frame, check_threads, parse_tsf_boxes
from sparrow.errors import SparrowError
from sparrow.output import check_output, check_output_file, claim_folder, read_marker, write_marker
from sparrow.threads import configure_threads, prefer_passive_wait, usable_cores

DEAD_PID = 2**22 + 7  # above Linux's largest pid_max: never a live process


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- check_output -------------------------------------------------------------------------------------------------


def test_new_and_empty_folders_are_accepted(tmp_path):
    assert check_output(tmp_path / "new" / "deeper", "segment") == tmp_path / "new" / "deeper"
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", "segment") == tmp_path / "empty"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


@pytest.mark.parametrize("mode", ["replace", "update"])
def test_foreign_folder_is_refused_unless_overwrite(tmp_path, mode):
    out = tmp_path / "v"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    with pytest.raises(SparrowError, match=r"holds files sparrow segment did not write \(notes.txt\).*--overwrite"):
        check_output(out, "segment", mode=mode)
    assert check_output(out, "segment", mode=mode, overwrite=True) == out
    assert (out / "notes.txt").read_text() == "x"


def test_own_earlier_result_is_replaceable_but_not_with_user_files_added(tmp_path):
    out = tmp_path / "res"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "00000.png").write_bytes(b"png")
    (out / "result.json").write_text("{}")
    write_marker(out, "segment")
    assert read_marker(out)["files"] == ["masks/00000.png", "result.json"]
    assert check_output(out, "segment") == out
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(SparrowError, match=r"earlier result plus files sparrow did not write \(mine.txt\)"):
        check_output(out, "segment")
    with pytest.raises(SparrowError, match="output of sparrow segment, not of sparrow infer"):
        check_output(out, "infer", mode="update")


def test_update_mode_accepts_its_marker_and_recognised_layouts(tmp_path):
    out = claim_folder(tmp_path / "pred", "infer")
    assert read_marker(out) == {"written_by": "sparrow", "command": "infer", "files": []}
    (out / "v" / "e").mkdir(parents=True)
    (out / "other.txt").write_text("x")
    assert check_output(out, "infer", mode="update") == out
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "report.json").write_text("{}")
    assert check_output(legacy, "eval", mode="update", recognise=lambda f: (f / "report.json").is_file()) == legacy


@pytest.mark.parametrize("out", [".", "..", "./", "/"])
def test_dot_and_root_are_refused(tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SparrowError, match="must name a new folder"):
        check_output(out, "segment", overwrite=True)


def test_current_folder_and_its_parents_are_refused(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    for out in (str(tmp_path / "work"), str(tmp_path)):
        with pytest.raises(SparrowError, match="current folder or contains it"):
            check_output(out, "segment", overwrite=True)


def test_inputs_are_never_inside_equal_to_or_containing_the_output(tmp_path):
    video = tmp_path / "v" / "clip.mp4"
    video.parent.mkdir()
    video.write_bytes(b"video")
    with pytest.raises(SparrowError, match="contains the input file .*clip.mp4"):
        check_output(tmp_path / "v", "segment", inputs=[video], overwrite=True)
    frames = tmp_path / "frames"
    frames.mkdir()
    with pytest.raises(SparrowError, match="contains the input folder"):
        check_output(frames, "segment", inputs=[frames], overwrite=True)
    with pytest.raises(SparrowError, match="lies inside the input folder"):
        check_output(frames / "out", "segment", inputs=[frames], overwrite=True)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "v")  # the same folder under another name
    with pytest.raises(SparrowError, match="contains the input file"):
        check_output(link, "segment", inputs=[video], overwrite=True)


def test_a_file_is_never_turned_into_a_folder(tmp_path):
    target = tmp_path / "result"
    target.write_text("a user's file")
    with pytest.raises(SparrowError, match="is a file; sparrow never turns a file into a folder"):
        check_output(target, "segment", overwrite=True)
    with pytest.raises(SparrowError, match="cannot create --out: .* is a file"):
        check_output(target / "sub", "segment")
    with pytest.raises(SparrowError, match="a file is never replaced by a folder"), atomic_dir(target) as tmp:
        (tmp / "x").write_text("x")
    assert target.read_text() == "a user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]


def test_unwritable_parent_is_one_error(tmp_path):
    if os.geteuid() == 0:
        parent = Path("/proc/sparrow-no-such-folder")  # root may write anywhere but here
    else:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o555)
    with pytest.raises(SparrowError, match="cannot write in"):
        check_output(parent / "out", "segment")


def test_output_file_rules(tmp_path):
    (tmp_path / "sub.zip").write_bytes(b"zip")
    with pytest.raises(SparrowError, match="file exists; pass --overwrite"):
        check_output_file(tmp_path / "sub.zip")
    assert check_output_file(tmp_path / "sub.zip", overwrite=True) == tmp_path / "sub.zip"
    with pytest.raises(SparrowError, match="is a folder"):
        check_output_file(tmp_path)


# --- atomic temporaries -------------------------------------------------------------------------------------------


def test_temporaries_carry_the_pid_and_stale_ones_are_swept(tmp_path):
    stale_dir = tmp_path / f".out.{DEAD_PID}.abcd_123.tmp"
    stale_dir.mkdir()
    (stale_dir / "half.png").write_bytes(b"x")
    stale_file = tmp_path / f".result.json.{DEAD_PID}.zz99zz99.tmp"
    stale_file.write_text("half")
    live = tmp_path / f".out.{os.getppid()}.abcdefgh.tmp"  # a live process's temporary stays
    live.mkdir()
    unrelated = tmp_path / ".out.old-notes.tmp"
    unrelated.write_text("not ours")
    assert temp_owner(stale_dir.name) == DEAD_PID and temp_owner(unrelated.name) is None
    with atomic_dir(tmp_path / "out") as tmp:
        assert temp_owner(tmp.name) == os.getpid()
        (tmp / "a.txt").write_text("a")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["out", live.name, unrelated.name])
    assert remove_stale_temps(tmp_path, force=True) == []


def test_failed_replace_keeps_the_old_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("boom")
    assert _tree(out) == {"old.txt": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with atomic_file(out / "x.json") as handle:
        handle.write("{}")
    with pytest.raises(SparrowError, match="a folder is never replaced by a file"), atomic_file(out):
        pass


def _synth_cmd(out: Path, videos: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sparrow",
        "synth",
        "--out",
        str(out),
        "--videos",
        str(videos),
        "--frames",
        "4",
        "--size",
        "32",
        "--quiet",
        "--split",
        "test",
    ]


def _wait_for_temp(parent: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if parent.is_dir() and any(temp_owner(p.name) == proc.pid for p in parent.iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError("the run never created its temporary folder")


def test_sigterm_unwinds_like_ctrl_c_and_a_killed_run_is_swept_by_the_next(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = subprocess.Popen(_synth_cmd(out, 100000), stderr=subprocess.PIPE, text=True)
    _wait_for_temp(out, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().splitlines() == ["sparrow synth: terminated (SIGTERM)"], err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # the temporary folder was removed
    killed = subprocess.Popen(_synth_cmd(out, 100000), stderr=subprocess.DEVNULL)
    _wait_for_temp(out, killed)
    killed.kill()  # SIGKILL: no cleanup possible
    killed.wait(timeout=60)
    assert any(temp_owner(p.name) == killed.pid for p in out.iterdir())
    done = subprocess.run(_synth_cmd(out, 2), check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "test"]  # the killed run's temporary is gone
    assert read_marker(out / "test")["command"] == "synth"


# --- argument checks ----------------------------------------------------------------------------------------------


def test_device_names():
    assert check_device(None) is None and check_device("CPU") == "cpu"
    for bad in ("gpu0", "cuda0", "cpu:1", "cuda:-1", ""):
        with pytest.raises(SparrowError, match="is not a device name"):
            check_device(bad)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SparrowError, match=r"--device 'cuda'.*use --device cpu"):
            check_device("cuda")


@pytest.mark.parametrize(
    "item,expected",
    [
        ("x:1,2,3,4", "frame must be a whole number"),
        ("1.5:1,2,30,40", "frame must be a whole number"),
        ("-1:1,2,30,40", "frame must be a whole number"),
        ("2:nan,0,inf,40", "X0 must be a finite number"),
        ("2:1,2,3", "need 4 numbers"),
        ("2:1,2,a,4", "X1 'a' is not a number"),
        ("2:10,10,5,20", "X1 > X0"),
        ("2 10,10,50,60", "must look like FRAME:X0,Y0,X1,Y1"),
        ("99:1,2,30,40", "frame 99 is out of range, the video has 10 frames"),
        ("2:200,200,300,300", "outside the 96x64"),
    ],
)
def test_tsf_box_errors(item, expected):
    with pytest.raises(SparrowError, match=expected):
        parse_tsf_boxes([item], num_frames=10, size=(64, 96))


def test_tsf_boxes_and_key_frame_values():
    assert parse_tsf_boxes(["3:10,20,50.5,60", "0:0,0,5,5"], num_frames=10, size=(64, 96)) == {
        3: [10.0, 20.0, 50.5, 60.0],
        0: [0.0, 0.0, 5.0, 5.0],
    }
    with pytest.raises(SparrowError, match="frame 3 is given twice"):
        parse_tsf_boxes(["3:1,1,5,5", "3:1,1,6,6"])
    assert check_key_frame(None, 10) is None and check_key_frame("auto", 10) == "auto" and check_key_frame("9", 10) == 9
    with pytest.raises(SparrowError, match="--key-frame 99999 is out of range: the video has 10 frames"):
        check_key_frame("99999", 10)
    with pytest.raises(SparrowError, match="'auto' or a frame index"):
        check_key_frame("-3", 10)
    with pytest.raises(SparrowError, match="--threads must be at least 1"):
        check_threads(0)


def test_thread_policy_caps_at_usable_cores_and_keeps_a_lower_count():
    import torch

    before = torch.get_num_threads()
    assert prefer_passive_wait() is False  # torch is loaded here: too late to change OpenMP's policy
    try:
        assert 1 <= usable_cores() <= (os.cpu_count() or 1)
        torch.set_num_threads(1)
        assert configure_threads(None) == 1  # a lower count already chosen stays
        assert configure_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_passive_wait_policy_is_asked_for_before_torch_loads():
    code = (
        "import os, sys; from sparrow.threads import prefer_passive_wait; "
        "print(prefer_passive_wait(), os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.stdout.split() == ["True", "PASSIVE", "False"], proc.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's choice wins
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.stdout.split() == ["False", "ACTIVE", "False"], proc.stderr


def test_open_progress_bars_end_their_line_before_an_error():
    import io

    from tqdm import tqdm

    from sparrow.cli import _close_progress_bars

    stream = io.StringIO()
    bar = tqdm(total=3, desc="davis", file=stream, leave=False)
    bar.update(1)
    assert not bar.disable and not stream.getvalue().endswith("\n")  # a live bar: its line is open
    _close_progress_bars()
    assert stream.getvalue().endswith("\n")  # the next message starts a line of its own
    assert "1/3" in stream.getvalue().rsplit("\r", 1)[-1]


def test_every_flag_has_help_and_no_bar_is_called_quiet():
    import argparse

    from sparrow.cli import build_parser

    missing, progress_flags = [], set()

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")
            elif action.help is None:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
            elif action.help is not argparse.SUPPRESS:
                progress_flags.update(o for o in action.option_strings if o in ("--quiet", "--no-progress"))

    walk(build_parser(), "sparrow")
    assert missing == []
    assert progress_flags == {"--quiet"}  # --no-progress survives only as a hidden alias


def test_version_flag():
    proc = subprocess.run(
        [sys.executable, "-m", "sparrow", "--version"], check=False, capture_output=True, text=True, timeout=60
    )
    import sparrow
    from sparrow.version import __version__

    assert __version__ == sparrow.__version__  # one version string (sparrow/__init__ may import it from here)
    assert proc.returncode == 0 and proc.stdout.strip() == f"sparrow {__version__}"


def test_results_of_versions_without_a_marker_are_recognised_but_not_a_users_folder(tmp_path):
    from sparrow.pipeline.commands import _is_old_demo, _is_old_segment_result

    old = tmp_path / "out"
    (old / "result" / "masks").mkdir(parents=True)
    (old / "result" / "masks" / "00000.png").write_bytes(b"png")
    (old / "result" / "result.json").write_text("{}")
    (old / "result" / "overlay.mp4").write_bytes(b"mp4")
    (old / "input.mp4").write_bytes(b"mp4")
    (old / "query.txt").write_text("q")
    assert check_output(old, "demo", recognise=_is_old_demo) == old
    assert check_output(old / "result", "segment", recognise=_is_old_segment_result) == old / "result"
    (old / "result" / "masks" / "notes.txt").write_text("mine")
    (old / "notes.txt").write_text("mine")
    with pytest.raises(SparrowError, match="did not write"):
        check_output(old / "result", "segment", recognise=_is_old_segment_result)
    with pytest.raises(SparrowError, match="did not write"):
        check_output(old, "demo", recognise=_is_old_demo)
