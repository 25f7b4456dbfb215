"""The bad-input corpus: every way a user was seen to hurt themselves, run through the CLI as a subprocess.

Each case runs ``python -m sparrow ...`` in a sandbox folder that holds a video and a user's notes (``v/clip.mp4``,
``v/notes.txt``) plus what the case needs, and asserts: the exit code, exactly one ``error:`` line on stderr that
names the problem and starts a line of its own (no progress-bar text glued before it), no traceback, and that the
sandbox is byte-for-byte what it was before (no file changed, none created, none deleted). Cases run a few at a
time in a module fixture; almost all fail before a model loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from eval_fixtures import mevis_split, two_boxes, write_index_sequence, write_pngs
from helpers_clips import two_object_clip
from PIL import Image

from sparrow.atomic import temp_owner
from sparrow.data.video_io import write_video
from sparrow.model.loading import BUNDLED_DIR
from sparrow.output import MARKER, read_marker

T, H, W = 10, 64, 96
DEAD_PID = 2**22 + 7  # above Linux's largest pid_max: never a live process
UNWRITABLE = "/proc/sparrow-bad-inputs/out"  # even root cannot create folders here


@dataclass
class Case:
    """One row of the corpus: how to set up the sandbox, the command, the exit code and the message."""

    name: str
    args: Callable[[Path], list[str]]  # builds extra files in the sandbox, returns the argv after "sparrow"
    message: str  # regex the one error line must match
    code: int = 2


def _clip(root: Path) -> Path:
    frames, _, _ = two_object_clip(t=T, h=H, w=W)
    return write_video(root / "clip.mp4", frames, fps=5)


def _zero_frame_mp4(path: Path) -> Path:
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=Fraction(5))
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    container.start_encoding()
    container.close()
    return path


def _audio_only(path: Path) -> Path:
    container = av.open(str(path), mode="w", format="mp4")
    stream = container.add_stream("aac", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    frame.sample_rate = 8000
    for _ in range(4):
        frame.pts = None
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def _frames(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir()
    for t, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (40, 40, 40)).save(folder / f"{t:05d}.jpg")
    return folder


def _model_copy(sandbox: Path, name: str) -> Path:
    dst = sandbox / name
    shutil.copytree(BUNDLED_DIR, dst)
    return dst


def _corrupt_weights(s: Path) -> list[str]:
    model = _model_copy(s, "model")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    return ["segment", "v/clip.mp4", "the red square", "--out", "res", "--model", "model", "--quiet"]


def _bad_model_config(s: Path) -> list[str]:
    model = _model_copy(s, "model")
    config = json.loads((model / "config.json").read_text())
    config["proposer_queries"] = 0
    (model / "config.json").write_text(json.dumps(config))
    return ["segment", "v/clip.mp4", "the red square", "--out", "res", "--model", "model", "--quiet"]


def _broken_model_config(s: Path) -> list[str]:
    (_model_copy(s, "model") / "config.json").write_text("{ not json")
    return ["segment", "v/clip.mp4", "the red square", "--out", "res", "--model", "model", "--quiet"]


def _foreign_weights(s: Path) -> list[str]:
    (_model_copy(s, "model") / "model.safetensors").write_bytes(b"PK\x03\x04 a zip, not weights")
    return ["infer", "--data", "v", "--out", "pred", "--model", "model", "--quiet"]


def _train_config(s: Path, extra: str) -> list[str]:
    (s / "data").mkdir()
    (s / "bad.yaml").write_text(
        "model: {init: tiny" + extra + "}\ndata: {sources: [{path: data}]}\nstage: {name: segmenter}\noutput_dir: run\n"
    )
    return ["train", "--config", "bad.yaml", "--quiet"]


def _eval_case(s: Path, damage: str) -> list[str]:
    rec = mevis_split(s)  # s/gt: one video, expressions "0" and "1"
    a, b = two_boxes()
    for exp, mask in (("0", a), ("1", a | b)):
        write_pngs(s / "pred" / "v1" / exp, mask, rec.frames)
    last = s / "pred" / "v1" / "1" / f"{rec.frames[-1]}.png"  # in the LAST expression: scoring would reach it last
    if damage == "size":
        Image.new("L", (rec.width + 3, rec.height)).save(last)
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[:40])
    elif damage == "report":
        (s / "reports").mkdir()
        (s / "reports" / "thesis.md").write_text("mine")
        return ["eval", "rvos", "--pred", "pred", "--gt", "gt", "--format", "mevis", "--report", "reports"]
    return ["eval", "rvos", "--pred", "pred", "--gt", "gt", "--format", "mevis", "--workers", "2"]


def _davis_corrupt_annotation(s: Path) -> list[str]:
    _davis_rgb(s)
    (s / "pred" / "seq" / "00004.png").unlink()
    write_index_sequence(s / "pred2" / "seq", np.zeros(two_boxes()[0].shape, np.uint8))  # a complete, valid prediction
    bad = s / "gt" / "seq" / "00003.png"
    bad.write_bytes(bad.read_bytes()[:30])
    return ["eval", "rvos", "--pred", "pred2", "--gt", "gt", "--format", "davis", "--workers", "2"]


def _davis_rgb(s: Path) -> list[str]:
    a, b = two_boxes()
    gt = np.zeros(a.shape, np.uint8)
    gt[a], gt[b] = 1, 2
    write_index_sequence(s / "gt" / "seq", gt)
    write_index_sequence(s / "pred" / "seq", gt)
    Image.new("RGB", (gt.shape[2], gt.shape[1])).save(s / "pred" / "seq" / "00004.png")
    return ["eval", "rvos", "--pred", "pred", "--gt", "gt", "--format", "davis"]


def _synth_split(s: Path) -> list[str]:
    mevis_split(s)
    return ["infer", "--data", "gt", "--out", "gt", "--model", "tiny", "--quiet"]


def _tsf_build(s: Path) -> list[str]:
    mevis_split(s)
    return ["tsf", "build", "--data", "gt", "--out", "cache", "--quiet"]


def _seg(*extra: str, video: str = "v/clip.mp4", query: str = "the red square", out: str = "res") -> Callable:
    return lambda s: ["segment", video, query, "--out", out, "--quiet", *extra]


def _with(setup: Callable[[Path], object], argv: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
    def build(s: Path) -> list[str]:
        setup(s)
        return argv(s)

    return build


def _foreign(name: str, *files: str) -> Callable[[Path], None]:
    def setup(s: Path) -> None:
        (s / name).mkdir(parents=True)
        for f in files:
            (s / name / f).write_text("a user's file")

    return setup


CASES = [
    # --out never destroys (the first finding: the input video and notes.txt were deleted)
    Case("out_contains_input_video", _seg(out="v"), r"--out contains the input file v/clip.mp4 .*choose another"),
    Case("out_contains_input_video_overwrite", _seg("--overwrite", out="v"), r"--out contains the input file"),
    Case(
        "out_foreign_folder",
        _with(_foreign("old", "notes.txt"), _seg(out="old")),
        r"old: folder exists and holds files sparrow segment did not write \(notes.txt\); pass --overwrite",
    ),
    Case(
        "out_old_result_plus_user_file",
        _with(_foreign("old", "result.json", "overlay.mp4", "thesis.tex"), _seg(out="old")),
        r"holds files sparrow segment did not write \(overlay.mp4, result.json, thesis.tex\)",
    ),
    Case(
        "out_is_a_file",
        _seg(out="v/notes.txt"),
        r"notes.txt: exists and is a file; sparrow never turns a file into a folder",
    ),
    Case("out_dot", _seg(out="."), r"--out '.' must name a new folder"),
    Case("out_unwritable_parent", _seg(out=UNWRITABLE), r"cannot write in /proc"),
    Case(
        "out_inside_input_frames",
        _with(lambda s: _frames(s / "frames", [(W, H)] * 3), _seg(video="frames", out="frames/out")),
        r"--out lies inside the input folder frames",
    ),
    Case(
        "demo_out_foreign_folder",
        _with(_foreign("old", "a.txt"), lambda s: ["demo", "--out", "old", "--quiet"]),
        r"holds files sparrow demo did not write \(a.txt\)",
    ),
    Case("infer_out_is_the_data", _synth_split, r"--out contains the input folder gt"),
    Case(
        "data_convert_onto_its_input",
        lambda s: ["data", "convert", "v", "--format", "mevis", "--out", "v"],
        r"--out contains the input folder v",
    ),
    Case(
        "synth_out_foreign_split",
        _with(_foreign("data/test", "keep.jpg"), lambda s: ["synth", "--out", "data", "--split", "test", "--quiet"]),
        r"data/test: folder exists and holds files sparrow synth did not write \(keep.jpg\)",
    ),
    Case(
        "tsf_out_foreign_folder",
        _with(_foreign("cache", "x.txt"), _tsf_build),
        r"cache: folder exists and holds files sparrow tsf build did not write",
    ),
    Case(
        "eval_report_foreign_folder",
        lambda s: _eval_case(s, "report"),
        r"--report.*holds files sparrow eval did not write \(thesis.md\)|reports: folder exists and holds files sparrow eval did not write",
    ),
    Case(
        "ytvos_pack_over_a_file",
        _with(
            lambda s: (s / "sub.zip").write_bytes(b"zip"),
            lambda s: ["eval", "ytvos-pack", "--pred", "v", "--out", "sub.zip"],
        ),
        r"sub.zip: file exists; pass --overwrite",
    ),
    # checks before the model loads
    Case("device_gpu0", _seg("--device", "gpu0"), r"--device 'gpu0' is not a device name"),
    Case("device_cuda_without_gpu", _seg("--device", "cuda"), r"--device 'cuda': .*use --device cpu"),
    Case("tsf_box_letters", _seg("--tsf-box", "x:1,2,3,4"), r"--tsf-box 'x:1,2,3,4': the frame must be a whole number"),
    Case(
        "tsf_box_float_frame",
        _seg("--tsf-box", "1.5:1,2,30,40"),
        r"--tsf-box '1.5:1,2,30,40': the frame must be a whole number",
    ),
    Case("tsf_box_nan_inf", _seg("--tsf-box", "2:nan,0,inf,40"), r"X0 must be a finite number, got 'nan'"),
    Case(
        "tsf_box_frame_out_of_range",
        _seg("--tsf-box", "50:1,2,30,40"),
        r"frame 50 is out of range, the video has 10 frames",
    ),
    Case("tsf_box_outside_frame", _seg("--tsf-box", "2:500,500,600,600"), r"the box lies outside the 96x64"),
    Case(
        "key_frame_out_of_range",
        _seg("--key-frame", "99999"),
        r"--key-frame 99999 is out of range: the video has 10 frames",
    ),
    Case("key_frame_negative", _seg("--key-frame", "-2"), r"--key-frame must be 'auto' or a frame index"),
    Case("threads_zero", _seg("--threads", "0"), r"--threads must be at least 1"),
    # bad videos and queries (handled before; kept so they stay handled)
    Case("video_missing", _seg(video="nope.mp4"), r"nope.mp4: no such video file"),
    Case(
        "video_empty_file",
        _with(lambda s: (s / "empty.mp4").touch(), _seg(video="empty.mp4")),
        r"empty.mp4: cannot open video: Invalid data found",
    ),
    Case(
        "video_corrupt",
        _with(lambda s: (s / "bad.mp4").write_bytes(b"not a video" * 100), _seg(video="bad.mp4")),
        r"bad.mp4: cannot open video: Invalid data found when processing input$",
    ),
    Case(
        "video_audio_only",
        _with(lambda s: _audio_only(s / "song.m4a"), _seg(video="song.m4a")),
        r"song.m4a: file has no video stream",
    ),
    Case(
        "video_zero_frames",
        _with(lambda s: _zero_frame_mp4(s / "zero.mp4"), _seg(video="zero.mp4")),
        r"zero.mp4: (video has zero frames|file has no video stream)",
    ),
    Case("query_empty", _seg(query="   "), r"the query is empty"),
    Case(
        "frames_mixed_sizes",
        _with(lambda s: _frames(s / "frames", [(W, H), (W, H), (W // 2, H)]), _seg(video="frames")),
        r"frames/00002.jpg: frame is 48x64 \(WxH\) but 00000.jpg is 96x64; all frames of a video must have one size",
    ),
    Case(
        "frames_folder_empty", _with(lambda s: (s / "frames").mkdir(), _seg(video="frames")), r"folder holds no frames"
    ),
    Case("weights_corrupt", _corrupt_weights, r"model.safetensors: cannot load weights"),
    Case(
        "model_config_bad_value",
        _bad_model_config,
        r"config.json: proposer_queries must be a positive whole number, got 0",
    ),
    Case("model_config_not_json", _broken_model_config, r"config.json: not valid JSON"),
    Case(
        "weights_not_safetensors", _foreign_weights, r"model.safetensors: cannot load weights: not a safetensors file"
    ),
    Case("model_missing", _seg("--model", "no_such_model"), r"no_such_model: no such model folder"),
    # bad training configs
    Case(
        "train_config_bad_value",
        lambda s: _train_config(s, ", config: {proposer_queries: -3}"),
        r"bad.yaml: proposer_queries must be a positive whole number, got -3",
    ),
    Case(
        "train_config_unknown_section",
        lambda s: _train_config(s, ", config: {selection: {bogus: 1}}"),
        r"bad.yaml: unknown model.config.selection fields \['bogus'\]",
    ),
    Case(
        "train_config_not_yaml",
        _with(lambda s: (s / "bad.yaml").write_text("model: [unclosed\n"), lambda s: ["train", "--config", "bad.yaml"]),
        r"bad.yaml: not valid YAML",
    ),
    # evaluation: every prediction file is checked before anything is scored
    Case(
        "eval_wrong_mask_size",
        lambda s: _eval_case(s, "size"),
        r"00005.png: mask is 43x24 \(WxH\) but the annotation is 40x24 \(nothing was scored\)",
    ),
    Case(
        "eval_truncated_png", lambda s: _eval_case(s, "truncated"), r"00005.png: unreadable image .*nothing was scored"
    ),
    Case("eval_rgb_index_png", _davis_rgb, r"00004.png: an index image .* is required, got mode 'RGB'"),
    Case(
        "eval_corrupt_annotation", _davis_corrupt_annotation, r"gt/seq/00003.png: unreadable image .*nothing was scored"
    ),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: files by content hash, folders by name (a created empty folder counts too)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else "dir"
    return out


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    return subprocess.run(
        [sys.executable, "-m", "sparrow", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def results(tmp_path_factory, clip) -> dict[str, tuple[subprocess.CompletedProcess, dict, dict, Path]]:
    root = tmp_path_factory.mktemp("corpus")

    def one(case: Case) -> tuple[str, tuple]:
        sandbox = root / case.name
        (sandbox / "v").mkdir(parents=True)
        shutil.copy(clip, sandbox / "v" / "clip.mp4")
        (sandbox / "v" / "notes.txt").write_text("a user's notes")
        argv = case.args(sandbox)
        before = _snapshot(sandbox)
        proc = _run(argv, sandbox)
        return case.name, (proc, before, _snapshot(sandbox), sandbox)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(one, CASES))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, results) -> None:
    proc, before, after, _ = results[case.name]
    if case.name == "device_cuda_without_gpu" and proc.returncode == 0:
        pytest.skip("a GPU is visible here")
    command = re.escape(proc.args[3])
    errors = [line for line in proc.stderr.split("\n") if "error:" in line]
    assert proc.returncode == case.code, proc.stderr
    assert len(errors) == 1, proc.stderr
    assert re.match(rf"sparrow {command}: error: ", errors[0]), repr(errors[0])  # a line of its own: nothing glued
    assert re.search(case.message, errors[0]), errors[0]
    assert "Traceback" not in proc.stderr and "[Errno" not in proc.stderr, proc.stderr
    assert after == before, "files changed: " + str(sorted(set(after.items()) ^ set(before.items())))


def test_a_good_run_writes_a_new_folder_sweeps_a_killed_runs_temporary_and_is_then_protected(clip, tmp_path) -> None:
    (tmp_path / "v").mkdir()
    shutil.copy(clip, tmp_path / "v" / "clip.mp4")
    (tmp_path / "v" / "notes.txt").write_text("a user's notes")
    stale = tmp_path / f".res.{DEAD_PID}.abcdefgh.tmp"  # what a SIGKILLed earlier run leaves
    (stale / "masks").mkdir(parents=True)
    inputs = _snapshot(tmp_path / "v")
    proc = _run(["segment", "v/clip.mp4", "the red square", "--out", "res", "--model", "tiny", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res", "v"]  # the stale temporary is gone
    assert not [p for p in tmp_path.iterdir() if temp_owner(p.name) is not None]
    assert _snapshot(tmp_path / "v") == inputs
    marker = read_marker(tmp_path / "res")
    assert marker["command"] == "segment" and "result.json" in marker["files"] and len(marker["files"]) == T + 2
    assert (tmp_path / "res" / MARKER).is_file() and len(list((tmp_path / "res" / "masks").iterdir())) == T
    (tmp_path / "res" / "mine.txt").write_text("added by the user")
    before = _snapshot(tmp_path)
    again = _run(["segment", "v/clip.mp4", "the red square", "--out", "res", "--model", "tiny", "--quiet"], tmp_path)
    assert again.returncode == 2 and "files sparrow did not write (mine.txt)" in again.stderr, again.stderr
    assert _snapshot(tmp_path) == before
