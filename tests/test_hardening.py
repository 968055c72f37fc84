"""Bad model files, user mistakes and interrupted writes: each a clear one-line error (or a clean
result), never a traceback, a silent wrong answer or partial output. One test per defect of the
hardening issue (D7-D15); the readers' defects are in test_hardening_readers.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from convert import to_nir
from core.errors import CheckpointError, ConfigError, DataError, ModelError, SnnDeployError
from core.fileio import exclusive, uninterrupted
from runtime import run as run_cmd
from runtime import stream as stream_cmd
from runtime import verify
from targets.plan import load_plan
from train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, *needles: str) -> str:
    """The command printed one error line (no traceback) holding every needle."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def graphs(trained_digits, tmp_path_factory):
    """The digits student as a float graph (with its ONNX files) and a fixed one, converted once."""
    out = tmp_path_factory.mktemp("hardening_graphs")
    assert to_nir.main([str(trained_digits), "--out", str(out), "--parity-samples", "32"]) == 0
    argv = [str(trained_digits), "--out", str(out), "--precision", "fixed", "--onnx", "false",
            "--parity-samples", "32", "--calibration-samples", "64"]  # fmt: skip
    assert to_nir.main(argv) == 0
    return out


# ---------------------------------------------------------------------------------------------
# D7, D8: checkpoints


def _resave(src: Path, dst: Path, change) -> Path:
    ckpt = torch.load(src, weights_only=True)
    change(ckpt)
    save_checkpoint(dst, {k: v for k, v in ckpt.items() if k not in ("format", "version", "checksum")})
    return dst


def test_a_text_file_named_pt_is_a_clean_error(tmp_path, capsys):
    path = tmp_path / "notes.pt"
    # (a text or an event file whose first byte reads as a pickle opcode was "not plain data" that
    # "needs code to load", with PyTorch's advice to load it with weights_only=False)
    cases = [(b"hello, this is not a checkpoint\n", "is not a PyTorch checkpoint: it starts with b'hell'")]
    cases += [
        (h, f"is not a PyTorch checkpoint: it starts with {h[:4]!r}")
        for h in (b"# a README\n", b"% Date 2019\n% evt 2.0\n")
    ]
    cases += [(b"", "is empty (0 bytes)"), (b"PK\x03\x04truncated zip", "corrupt or truncated")]
    for content, needle in cases:
        path.write_bytes(content)
        assert to_nir.main([str(path), "--out", str(tmp_path / "g")]) == 2
        _one_line_error(capsys, str(path), needle)


def test_a_checkpoint_carries_a_checksum_and_every_damaged_byte_is_caught(trained_digits, tmp_path):
    raw = trained_digits.read_bytes()
    ckpt = load_checkpoint(trained_digits)
    assert ckpt["version"] == 2 and len(ckpt["checksum"]) == 64
    rng = np.random.default_rng(0)
    errors = same = 0
    for i, pos in enumerate(rng.choice(len(raw), size=60, replace=False)):
        bad = bytearray(raw)
        bad[pos] ^= 1 << int(rng.integers(8))
        path = tmp_path / f"flip{i}.pt"
        path.write_bytes(bytes(bad))
        try:
            got = load_checkpoint(path)
        except CheckpointError:
            errors += 1
            continue
        # a flip the file format ignores (zip header padding, say) must leave the contents as they were
        assert all(torch.equal(got["state_dict"][k], v) for k, v in ckpt["state_dict"].items()), pos
        same += 1
    assert errors >= 40, (errors, same)  # nearly every byte of the file is weights or pickled data


def test_legacy_checkpoint_without_checksum_still_loads(trained_digits, tmp_path):
    ckpt = torch.load(trained_digits, weights_only=True)
    legacy = {k: v for k, v in ckpt.items() if k != "checksum"} | {"version": 1}
    torch.save(legacy, tmp_path / "v1.pt")
    model_from_checkpoint(load_checkpoint(tmp_path / "v1.pt"))
    torch.save(legacy | {"version": 2}, tmp_path / "v2-unsealed.pt")  # a version 2 file must carry its seal
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(tmp_path / "v2-unsealed.pt")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["arch_args"].__setitem__("channels", (-5, 3)), "channels must be a list of positive integers"),
        (lambda c: c["arch_args"].__setitem__("input_size", 10**7), "do not fit architecture"),  # 4e15 weights
        (lambda c: c["arch_args"].__setitem__("channels", "abc"), "channels must be a list of positive integers"),
        (lambda c: c["arch_args"].__setitem__("tau", "abc"), "cannot be built with"),
        (lambda c: c.__setitem__("state_dict", [1, 2, 3]), "'state_dict' must be a dict"),
        (lambda c: c["state_dict"].__setitem__("features.0.weight", "text"), "is not a named tensor"),
        (lambda c: c["state_dict"]["features.1.dt"].fill_(0.0), "layer features.1"),
        (lambda c: c["state_dict"]["features.1.dt"].fill_(float("nan")), "NaN"),
    ],
    ids=[
        "negative-channels",
        "huge-input",
        "text-channels",
        "text-tau",
        "state-dict-list",
        "text-tensor",
        "dt-0",
        "dt-nan",
    ],
)
def test_absurd_checkpoint_contents_are_refused(trained_digits, tmp_path, capsys, change, message):
    path = _resave(trained_digits, tmp_path / "bad.pt", change)
    assert to_nir.main([str(path), "--out", str(tmp_path / "g")]) == 2
    _one_line_error(capsys, str(path), message)
    assert not (tmp_path / "g").exists()


# ---------------------------------------------------------------------------------------------
# D8, D9, D10, D11: graph and ONNX files


def _mutated(src: Path, dst: Path, change) -> Path:
    g = nir.read(src)
    meta = json.loads(g.metadata["snn_deploy"])
    raw = change(g, meta)
    g.metadata["snn_deploy"] = raw if isinstance(raw, str) else json.dumps(meta)
    nir.write(dst, g)
    return dst


def _set_meta(key, value):
    return lambda g, m: m.__setitem__(key, value)


def _fixed(layer, key, value):
    return lambda g, m: m["layers"][layer]["fixed"].__setitem__(key, value)


def _input_shape(shape):
    return lambda g, m: g.nodes["input"].input_type.__setitem__("input", np.array(shape))


GRAPH_CASES = {
    "pool-stride-0": (
        "model",
        lambda g, m: setattr(g.nodes["features.2"], "stride", np.array([0, 0])),
        "stride and dilation >= 1",
    ),
    "dt-string": ("model", _set_meta("dt", "fast"), "dt must be a positive number"),
    "dt-0": ("model", _set_meta("dt", 0), "dt must be a positive number"),
    "dt-nan": ("model", _set_meta("dt", float("nan")), "dt must be a positive number"),
    "metadata-list": ("model", lambda g, m: json.dumps([1, 2]), "must be a JSON object"),
    "metadata-text": ("model", lambda g, m: "{not json", "not valid JSON"),
    "giant-input": ("model", _input_shape([1, 100000, 100000]), "at most"),
    "zero-input": ("model", _input_shape([1, 0, 8]), "dimensions >= 1"),
    "huge-T": ("model", _set_meta("T", 10**12), "T must be a whole number"),
    "huge-weight-exp": ("model.fixed", _fixed("features.0", "weight_exp", 10**6), "weight_exp"),
    "huge-bias-exp": ("model.fixed", _fixed("features.0", "bias_exp", 10**6), "bias_exp"),
    "text-vth": ("model.fixed", _fixed("features.1", "vth", "high"), "vth"),
    "bias-length": (
        "model",
        lambda g, m: setattr(g.nodes["features.0"], "bias", np.zeros(5, np.float32)),
        "Conv2d has 5 biases for 32 outputs",
    ),
    "affine-3d": (
        "model",
        lambda g, m: setattr(g.nodes["head.2"], "weight", np.zeros((10, 256, 2), np.float32)),
        "head.2: Affine weight must be a matrix",
    ),
    "output-shape": (
        "model",
        lambda g, m: g.nodes["output"].output_type.__setitem__("output", np.array([12])),
        "the Output node output declares shape",
    ),
}


@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_damaged_graph_is_one_error_in_run_verify_and_stream(graphs, tmp_path, capsys, case):
    base, change, message = GRAPH_CASES[case]
    path = _mutated(graphs / f"{base}.nir", tmp_path / f"{case}.nir", change)
    with pytest.raises(SnnDeployError, match=message):
        load_plan(path)
    assert run_cmd.main([str(path), "--target", "reference", "--samples", "4", "--progress", "false"]) == 2
    _one_line_error(capsys, message)
    assert verify.main([str(path), "--targets", "eventsim", "--samples", "4", "--progress", "false"]) == 2
    _one_line_error(capsys, message)
    events = tmp_path / "ev.npy"
    np.save(events, np.zeros(4, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")]))
    assert stream_cmd.main([str(events), "--model", str(path), "--sensor-size", "8x8", "--progress", "false"]) == 2
    _one_line_error(capsys, message)


def test_dt_flag_of_zero_or_nan_is_refused(graphs, capsys):
    for value in ("0", "nan", "-1e-3"):
        argv = [str(graphs / "model.nir"), "--target", "reference", f"--dt={value}", "--samples", "2"]
        assert run_cmd.main(argv) == 2
        _one_line_error(capsys, "--dt")


def test_onnx_file_with_huge_input_dimensions_is_named(graphs, tmp_path, capsys):
    import onnx

    for name in ("model.nir", "model.onnx", "model.step.onnx"):
        (tmp_path / name).write_bytes((graphs / name).read_bytes())
    for name in ("model.onnx", "model.step.onnx"):
        m = onnx.load(tmp_path / name)
        for d in m.graph.input[0].type.tensor_type.shape.dim[-2:]:
            d.dim_value = 10**9
        onnx.save(m, tmp_path / name)
    argv = [str(tmp_path / "model.nir"), "--target", "onnx", "--samples", "4", "--progress", "false"]
    assert run_cmd.main(argv) == 2
    _one_line_error(capsys, "model.onnx", "1000000000", "not exported from this graph")


# ---------------------------------------------------------------------------------------------
# D12, D13, D15: user mistakes


def test_bad_output_paths_are_refused_before_any_work(graphs, trained_digits, tmp_path, capsys):
    graph = str(graphs / "model.nir")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    a_folder = tmp_path / "a-folder"
    a_folder.mkdir()
    unwritable = Path("/proc/snn-deploy-out")  # (not writable, even for root)
    quick = ["--samples", "2", "--progress", "false"]
    cases = [
        (run_cmd.main, [graph, "--target", "reference", *quick, "--out", str(a_file / "r.json")], "is a file"),
        (run_cmd.main, [graph, "--target", "reference", *quick, "--out", str(a_folder)], "is a folder"),
        (run_cmd.main, [graph, "--target", "reference", *quick, "--out", str(unwritable / "r.json")], "cannot be"),
        (verify.main, [graph, "--targets", "eventsim", *quick, "--out", str(a_file)], "is a file"),
        (verify.main, [graph, "--targets", "eventsim", *quick, "--out", str(a_file / "v")], "is a file"),
        (verify.main, [graph, "--targets", "eventsim", *quick, "--out", str(unwritable)], "cannot be written"),
        (to_nir.main, [str(trained_digits), "--out", str(a_file)], "is a file"),
        (to_nir.main, [str(trained_digits), "--out", str(unwritable)], "cannot be written"),
    ]
    for main, argv, message in cases:
        assert main(argv) == 2, argv
        _one_line_error(capsys, message)
    events = tmp_path / "ev.npy"
    np.save(events, np.zeros(4, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")]))
    stream = [str(events), "--model", graph, "--sensor-size", "8x8", "--progress", "false"]
    for extra, message in (
        (["--out", str(a_folder)], "is a folder"),
        (["--out", str(a_file / "w.jsonl")], "is a file"),
        (["--out", str(tmp_path / "w.jsonl"), "--plot", str(unwritable / "p.png")], "cannot be written"),
    ):
        assert stream_cmd.main([*stream, *extra]) == 2, extra
        _one_line_error(capsys, message)
    assert not (tmp_path / "w.jsonl").exists()  # refused before a window was written


def test_an_output_that_is_one_of_the_inputs_is_refused(graphs, tmp_path, capsys):
    """``runtime.run g.nir --out g.nir`` wrote its JSON report over the graph (the input lost); the
    same held for the stream's --out and --plot over its recording or graph, and a conversion named
    like the foreign graph it converts (with --overwrite)."""
    import shutil

    graph = tmp_path / "g.nir"
    shutil.copy(graphs / "model.nir", graph)
    events = tmp_path / "ev.npy"
    np.save(events, np.zeros(4, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")]))
    spikes = tmp_path / "x.npy"
    np.save(spikes, np.zeros((4, 2, 1, 8, 8), np.float32))
    before = {p: p.read_bytes() for p in (graph, events, spikes)}
    stream = [str(events), "--model", str(graph), "--sensor-size", "8x8", "--progress", "false"]
    cases = [
        (run_cmd.main, [str(graph), "--target", "reference", "--out", str(graph)], "--out", "is the graph"),
        (run_cmd.main, [str(graph), "--data", str(spikes), "--out", str(spikes)], "--out", "is the --data file"),
        (stream_cmd.main, [*stream, "--out", str(events)], "--out", "is the recording"),
        (stream_cmd.main, [*stream, "--out", str(graph)], "--out", "is the --model graph"),
        (stream_cmd.main, [*stream, "--plot", str(graph)], "--plot", "is the --model graph"),
        (
            to_nir.main,
            [str(graph), "--data", str(spikes), "--out", str(tmp_path), "--name", "g", "--overwrite", "true"],
            "--name g: the output",
            "is the graph being converted",
        ),  # fmt: skip
    ]
    for main, argv, *message in cases:
        assert main(argv) == 2, argv
        _one_line_error(capsys, *message, "writing it would replace it")
    assert {p: p.read_bytes() for p in before} == before


def test_read_only_folder_is_refused(graphs, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("runs as root, who may write into a read-only folder (the /proc case covers unwritable paths)")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        argv = [str(graphs / "model.nir"), "--target", "reference", "--samples", "2", "--out", str(ro / "r.json")]
        assert run_cmd.main(argv) == 2
        _one_line_error(capsys, "cannot be written")
    finally:
        ro.chmod(0o700)


def test_values_out_of_range_are_refused_by_name(graphs, trained_digits, tmp_path, capsys):
    graph = str(graphs / "model.nir")
    cases = [
        (verify.main, [graph, "--samples", "0"], "--samples must be at least 1"),
        (verify.main, [graph, "--samples", "-3"], "--samples must be at least 1"),
        (run_cmd.main, [graph, "--batch-size", "0"], "--batch-size must be at least 1"),
        (run_cmd.main, [graph, "--steps", "0"], "--steps must be at least 1"),
        (to_nir.main, [str(trained_digits), "--parity-samples", "0"], "--parity-samples must be at least 1"),
        (to_nir.main, [str(trained_digits), "--calibration-samples", "0"], "--calibration-samples must be at least 1"),
        (to_nir.main, [str(trained_digits), "--weight-bits", "-1"], "--weight-bits must be at least 0"),
        (to_nir.main, [str(trained_digits), "--seed", "-1"], "--seed must be at least 0"),  # NumPy's traceback
        # fixed precision has its own weights: the flags were ignored without a word
        (to_nir.main, [str(trained_digits), "--precision", "fixed", "--weight-bits", "4"], "--precision fixed takes"),
        (to_nir.main, [str(trained_digits), "--precision", "fixed", "--per-channel", "false"], "--precision fixed"),
    ]
    for main, argv, message in cases:
        assert main(argv) == 2, argv
        _one_line_error(capsys, message)


def test_an_option_the_target_does_not_take_is_refused(graphs, tmp_path, capsys):
    """``--device`` and ``--threads`` belong to the torch (and onnx) targets; given for another
    target they were ignored without a word."""
    graph = str(graphs / "model.nir")
    events = tmp_path / "ev.npy"
    np.save(events, np.zeros(4, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")]))
    stream = [str(events), "--model", graph, "--sensor-size", "8x8", "--progress", "false"]
    for main, argv, message in (
        (
            run_cmd.main,
            [graph, "--target", "eventsim", "--device", "cpu"],
            "--device does not apply to target 'eventsim'",
        ),
        (run_cmd.main, [graph, "--target", "reference", "--device", "cuda"], "--device does not apply"),
        (stream_cmd.main, [*stream, "--target", "eventsim", "--threads", "2"], "--threads does not apply"),
        (stream_cmd.main, [*stream, "--target", "onnx", "--device", "cpu"], "(the options it takes: --threads)"),
        # (ignored before, with a note in the JSON report only)
        (run_cmd.main, [graph, "--target", "onnx", "--per-step", "true"], "rasters, which the onnx target does not"),
    ):
        assert main(argv) == 2, argv
        _one_line_error(capsys, message)
    with pytest.raises(SystemExit):  # argparse's own message names the choices
        run_cmd.main([graph, "--target", "torch", "--device", "tpu"])
    assert "choose from 'auto', 'cpu', 'cuda'" in capsys.readouterr().err


def test_crop_outside_the_sensor_and_downsample_zero_are_refused(graphs, tmp_path, capsys):
    events = tmp_path / "ev.npy"
    np.save(events, np.zeros(4, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")]))
    base = [str(events), "--model", str(graphs / "model.nir"), "--sensor-size", "64x64", "--progress", "false"]
    for extra, message in (
        (["--crop", "100,100,8,8"], "reaches outside the 64x64 sensor"),
        (["--crop=-4,0,8,8"], "reaches outside"),
        (["--crop", "60,0,8,8"], "reaches outside"),
        (["--downsample", "0"], "--downsample must be at least 1"),
    ):
        assert stream_cmd.main([*base, *extra]) == 2, extra
        _one_line_error(capsys, message)


# ---------------------------------------------------------------------------------------------
# D14: names, overwrites, concurrent and interrupted conversions


def test_default_names_carry_the_precision_and_replacing_needs_overwrite(graphs, trained_digits, capsys):
    assert (graphs / "model.nir").is_file() and (graphs / "model.fixed.nir").is_file()
    before = (graphs / "model.nir").stat().st_mtime_ns
    assert to_nir.main([str(trained_digits), "--out", str(graphs), "--parity-samples", "8"]) == 2
    _one_line_error(capsys, "already holds", "model.nir", "--overwrite")
    assert (graphs / "model.nir").stat().st_mtime_ns == before
    argv = [str(trained_digits), "--out", str(graphs), "--parity-samples", "8", "--onnx", "false", "--overwrite"]
    assert to_nir.main(argv) == 0
    assert (graphs / "model.nir").stat().st_mtime_ns != before


def test_a_second_conversion_of_the_same_files_is_refused(trained_digits, tmp_path, capsys):
    out = tmp_path / "g"
    with exclusive(f"{out.resolve()}/model", "busy"):
        assert to_nir.main([str(trained_digits), "--out", str(out), "--parity-samples", "8"]) == 2
    _one_line_error(capsys, "is being written by process", str(os.getpid()))
    assert not out.exists()
    # other names in the same folder are free
    assert to_nir.main([str(trained_digits), "--out", str(out), "--name", "other", "--parity-samples", "8"]) == 0


def test_a_second_stream_or_verification_into_the_same_output_is_refused(graphs, tmp_path, capsys):
    """Two streams into one --out interleaved their windows; two verifications into one folder left
    one run's report.md beside the other's report.json. The second is refused, its output untouched."""
    events = tmp_path / "ev.npy"
    np.save(events, np.zeros(4, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")]))
    lines, report = tmp_path / "w.jsonl", tmp_path / "v"
    graph = str(graphs / "model.nir")
    argv = [str(events), "--model", graph, "--sensor-size", "8x8", "--progress", "false", "--out", str(lines)]
    with exclusive(f"{lines.resolve()}/runtime.stream", "busy"):
        assert stream_cmd.main(argv) == 2
    _one_line_error(capsys, "is being written by process", str(os.getpid()))
    assert not lines.exists()
    assert stream_cmd.main(argv) == 0 and lines.exists()
    with exclusive(f"{report.resolve()}/runtime.verify", "busy"):
        assert verify.main([graph, "--targets", "eventsim", "--samples", "2", "--out", str(report)]) == 2
    _one_line_error(capsys, "is being written by process")
    assert not (report / "report.json").exists()


def _env(tmp: Path) -> dict[str, str]:
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}


def _complete(path: Path) -> None:
    """Every file a conversion leaves is whole."""
    if path.suffix == ".nir":
        load_plan(path)
    elif path.suffix == ".onnx":
        import onnx

        onnx.checker.check_model(onnx.load(path))
    elif path.suffix == ".json":
        json.loads(path.read_text())
    else:
        raise AssertionError(f"unexpected file {path}")


@pytest.mark.slow
def _signal_after(argv: list[str], tmp: Path, delay: float, sig: int) -> subprocess.Popen:
    """Run a command; send it ``sig`` after ``delay`` seconds unless it finished; return it finished. (Its
    SIGINT is Python's as in a terminal, also where the tests run in a background job, which ignores it.)"""
    proc = subprocess.Popen(argv, cwd=ROOT, env=_env(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
        proc.wait()
    return proc


def test_kill_during_conversion_leaves_nothing_partial(trained_digits, tmp_path):
    out, tmp = tmp_path / "g", tmp_path / "tmp"
    argv = [sys.executable, "-m", "convert.to_nir", str(trained_digits), "--out", str(out), "--overwrite"]
    rng = np.random.default_rng(1)
    for delay in (*rng.uniform(1.0, 6.0, 3), 30.0):
        proc = _signal_after(argv, tmp, delay, signal.SIGKILL)
        for f in out.iterdir() if out.exists() else []:
            assert not f.name.startswith("."), f"staging or temporary file left in --out: {f}"
            _complete(f)
    assert proc.returncode == 0, proc.stderr.read().decode()  # (the last one finishes)
    assert sorted(f.name for f in out.iterdir()) == ["model.conversion.json", "model.nir", "model.onnx",
                                                     "model.step.onnx"]  # fmt: skip
    staging = tmp / "snn-deploy-staging"
    assert not [p for p in staging.iterdir() if p.is_dir()], "the killed runs' staging was not cleaned up"


def test_ctrl_c_during_conversion_is_one_line_and_leaves_all_or_nothing(trained_digits, tmp_path):
    """Ctrl-C printed a KeyboardInterrupt traceback from whatever import or loop it hit; now one line, exit
    130, and --out holds every file of the conversion or none (the moves into it hold the signal back).
    (Ctrl-C while Python still imports torch, in the first seconds, is Python's own traceback.)"""
    out, tmp = tmp_path / "g", tmp_path / "tmp"
    argv = [sys.executable, "-m", "convert.to_nir", str(trained_digits), "--out", str(out), "--parity-samples", "64"]
    for delay in (5.0, 7.0):
        proc = _signal_after(argv, tmp, delay, signal.SIGINT)
        err = proc.stderr.read().decode()
        assert "Traceback" not in err, err
        written = sorted(f.name for f in out.iterdir()) if out.exists() else []
        if proc.returncode in (0, -signal.SIGINT) or "the conversion was written" in err:  # (it finished first)
            assert written == ["model.conversion.json", "model.nir", "model.onnx", "model.step.onnx"], written
            break
        assert proc.returncode == 130 and err.splitlines()[-1] == "interrupted: nothing was written", err
        assert written == [], written


def test_uninterrupted_holds_ctrl_c_back_to_the_end_of_the_block():
    """The signal reaches the handler the process had, after the block: Python's KeyboardInterrupt, or
    nothing where SIGINT is ignored (as in a background job)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        done = []
        with pytest.raises(KeyboardInterrupt), uninterrupted():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append(1)
        assert done == [1] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def _read_with_inode(path: Path) -> tuple[bytes, int] | None:
    """A file's bytes and the inode they were read from (one open, so the two belong together), or
    None when there is no file."""
    try:
        with open(path, "rb") as f:
            return f.read(), os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return None


@pytest.mark.slow
def test_kill_during_streaming_leaves_only_whole_lines(graphs, tmp_path):
    from inputs.recording import make_recording

    rec = tmp_path / "digits.h5"
    make_recording(rec, samples=40)
    model = tmp_path / "m.nir"  # a graph for 2x34x34 events: the recording's digits
    from tests.test_stream import TIMING

    torch.manual_seed(0)
    from convert.build import build_nir
    from convert.nirgraph import write_graph
    from train.models import build_model

    net = build_model("dvs_csnn", input_size=34, input_pool=2, channels=(8, 16), num_classes=10).eval()
    graph, _ = build_nir(net, (2, 34, 34), precision="float", steps=12)
    write_graph(model, graph)
    out = tmp_path / "w.jsonl"
    argv = [sys.executable, "-m", "runtime.stream", str(rec), "--model", str(model), "--target", "torch",
            "--out", str(out), "--progress", "false", *TIMING]  # fmt: skip
    killed, earlier = 0, None  # earlier: the file an earlier run left (its inode)
    for wanted in (1, 3, 6):
        proc = subprocess.Popen(argv, cwd=ROOT, env=_env(tmp_path / "tmp"), stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            written = _read_with_inode(out)
            # a later run replaces the earlier run's windows with its first in one rename: never no file
            assert written is not None or earlier is None, "the earlier run's windows went before this run's first"
            if written is not None and written[1] != earlier and written[0].count(b"\n") >= wanted:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
        data, earlier = _read_with_inode(out)
        lines = data.split(b"\n")
        assert lines[-1] == b"", "a partial last line"
        windows = [json.loads(line) for line in lines[:-1]]
        assert len(windows) >= wanted and all("counts" in w for w in windows)
    assert killed >= 2, "the stream ended before it could be killed"


def test_a_failed_stream_keeps_the_earlier_windows(graphs, tmp_path, capsys):
    out = tmp_path / "w.jsonl"
    out.write_text('{"earlier": 1}\n')
    argv = [str(tmp_path / "missing.h5"), "--model", str(graphs / "model.nir"), "--out", str(out)]
    assert stream_cmd.main(argv) == 2
    _one_line_error(capsys, "does not exist")
    assert out.read_text() == '{"earlier": 1}\n'


def test_an_interrupted_stream_says_where_its_windows_are(graphs, tmp_path, capsys, monkeypatch):
    """Ctrl-C ends a stream with 130 and no summary; the message points at the windows written so far,
    and before the first window the earlier run's file is left as it was (and not pointed at)."""
    out = tmp_path / "w.jsonl"
    out.write_text('{"earlier": 1}\n')
    windows = 0

    def interrupted(cfg, emit, **kwargs):
        for i in range(windows):
            emit({"window": i, "counts": [i]})
        raise KeyboardInterrupt

    monkeypatch.setattr(stream_cmd, "stream", interrupted)
    argv = [str(tmp_path / "any.h5"), "--model", str(graphs / "model.nir"), "--out", str(out)]
    assert stream_cmd.main(argv) == 130
    err = capsys.readouterr().err
    assert "no summary was written" in err and "windows so far" not in err
    assert out.read_text() == '{"earlier": 1}\n'
    windows = 2
    assert stream_cmd.main(argv) == 130
    assert f"no summary was written; the windows so far are in {out}" in capsys.readouterr().err
    assert [json.loads(line)["window"] for line in out.read_text().splitlines()] == [0, 1]
    assert not out.with_name(out.name + ".summary.json").exists()


def test_config_errors_are_config_errors():
    from core.config import from_dict
    from runtime.run import RunConfig

    with pytest.raises(ConfigError, match="--samples must be at least 1"):
        from_dict(RunConfig, {"samples": 0})
    with pytest.raises(ConfigError, match="--dt must be a finite number"):
        from_dict(RunConfig, {"dt": float("inf")})
    assert issubclass(DataError, SnnDeployError) and issubclass(ModelError, SnnDeployError)


def test_a_graph_file_that_hangs_or_crashes_the_hdf5_library_is_an_error(graphs, monkeypatch):
    """A damaged string heap can make libhdf5 loop forever (found by bench.fuzz); the file is read in a
    forked child with a deadline, so a hang or a crash there is one DataError here."""
    import targets.plan as plan_module

    monkeypatch.setattr(plan_module, "READ_SECONDS", 1.0)
    monkeypatch.setattr(nir, "read", lambda *a, **k: time.sleep(60))
    start = time.monotonic()
    with pytest.raises(DataError, match="did not finish reading it in 1 s"):
        load_plan(graphs / "model.nir")
    assert time.monotonic() - start < 10
    monkeypatch.setattr(nir, "read", lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(DataError, match="crashed reading it"):
        load_plan(graphs / "model.nir")


def test_running_out_of_memory_is_one_line(graphs, monkeypatch, capsys):
    """A run too big for the machine (a graph's long T times many samples) ends with one line that says
    what could not be allocated and how to ask for less."""
    import runtime.run as run_module

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 92.0 GiB for an array with shape (1000000, 360, 1, 8, 8)")

    monkeypatch.setattr(run_module, "command_inputs", too_big)
    assert run_cmd.main([str(graphs / "model.nir"), "--target", "reference", "--progress", "false"]) == 2
    _one_line_error(capsys, "out of memory: Unable to allocate 92.0 GiB", "--samples")
    # the stream's own flags (it has no --samples or --steps), and its window bounded up front
    monkeypatch.setattr(stream_cmd, "stream", too_big)
    events = str(ROOT / "tests" / "data" / "no-such-recording.npy")
    assert stream_cmd.main([events, "--model", str(graphs / "model.nir"), "--progress", "false"]) == 2
    _one_line_error(capsys, "out of memory: Unable to allocate 92.0 GiB", "--window-steps", "--chunk-events")
    big = [events, "--model", str(graphs / "model.nir"), "--window-steps", "1000000000"]
    assert stream_cmd.main(big) == 2
    _one_line_error(capsys, "--window-steps must be at most 1000000, got 1000000000")
    assert to_nir.main([str(graphs / "no-such.pt"), "--steps", "10000000"]) == 2  # (before the file is read)
    _one_line_error(capsys, "--steps must be at most 1000000, got 10000000")


def test_convert_name_is_a_base_name(tmp_path, capsys):
    """``--name model.nir`` wrote model.nir.nir, model.nir.onnx, ...: refused before the checkpoint is read."""
    for name, stem in [("model.nir", "model"), ("net.fixed.onnx", "net.fixed"), ("m.JSON", "m")]:
        assert to_nir.main([str(tmp_path / "no-such.pt"), "--name", name]) == 2
        _one_line_error(capsys, f"--name is the files' base name, without a suffix: {stem!r} writes {stem}.nir")
    assert to_nir.main([str(tmp_path / "no-such.pt"), "--name", "model.v2"]) == 2  # (a dot is fine)
    _one_line_error(capsys, "no-such.pt")


def test_an_interrupted_recording_is_one_line(tmp_path, monkeypatch, capsys):
    """Ctrl-C while a recording was emulated printed a KeyboardInterrupt traceback."""
    from inputs import recording

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recording, "make_recording", interrupted)
    assert recording.main([str(tmp_path / "r.h5")]) == 130
    assert capsys.readouterr().err == "interrupted: nothing was written\n" and not (tmp_path / "r.h5").exists()


def test_an_interrupted_training_says_whether_there_is_anything_to_resume(tmp_path, monkeypatch, capsys):
    """It said 'the last finished epoch is saved' when Ctrl-C came while the data was read."""
    from train import bkd

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(bkd, "train", interrupted)
    assert bkd.main(["--out", str(tmp_path / "r")]) == 130
    assert "interrupted before the first epoch finished: nothing to resume" in capsys.readouterr().err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "teacher.last.pt").write_bytes(b"")
    assert bkd.main(["--out", str(tmp_path / "r")]) == 130
    assert "the last finished epoch is saved, continue with --resume" in capsys.readouterr().err


def test_a_dialect_is_for_graphs_other_libraries_wrote(graphs, tmp_path, capsys):
    """``--dialect snntorch`` on our float graph ran it in snnTorch's semantics (other spikes than the graph
    means), and on our fixed graph was ignored without a word; now refused. ``nir``, what they are
    written in, still runs."""
    for name in ("model.nir", "model.fixed.nir"):
        graph = str(graphs / name)
        assert run_cmd.main([graph, "--target", "reference", "--dialect", "snntorch", "--samples", "2"]) == 2
        _one_line_error(capsys, f"{graph} was written by snn-deploy to be run in the nir dialect: --dialect snntorch")
        out = str(tmp_path / f"{name}.json")
        assert run_cmd.main([graph, "--target", "reference", "--dialect", "nir", "--samples", "2", "--out", out]) == 0


def test_dt_on_a_fixed_graph_is_refused(graphs, tmp_path, capsys):
    """A fixed-precision graph's decays are integers: ``--dt 0.0005`` gave the same spikes as its own dt
    without a word (on the float graph it changes the decays, and runs)."""
    fixed = str(graphs / "model.fixed.nir")
    assert run_cmd.main([fixed, "--target", "reference", "--dt", "0.0005", "--samples", "2"]) == 2
    _one_line_error(capsys, "is a fixed-precision graph: its decays are integers set at conversion for dt 0.001 s")
    for graph in (fixed, str(graphs / "model.nir")):  # its own dt, or a float graph
        dt = "0.001" if graph == fixed else "0.0005"
        out = str(tmp_path / f"{Path(graph).name}.json")
        assert run_cmd.main([graph, "--target", "reference", "--dt", dt, "--samples", "2", "--out", out]) == 0


def test_split_and_data_root_with_a_file_as_data_are_refused(graphs, tmp_path, capsys):
    """``--split train`` or ``--data-root DIR`` beside ``--data x.npy`` (or an event file) were ignored
    without a word: the file is read whole."""
    spikes = tmp_path / "x.npy"
    np.save(spikes, np.zeros((4, 2, 1, 8, 8), np.float32))
    graph = str(graphs / "model.nir")
    for main, flags in [(run_cmd.main, ["--target", "reference"]), (verify.main, ["--targets", "torch"])]:
        for extra, flag in [(["--split", "train"], "--split train"), (["--data-root", str(tmp_path)], "--data-root")]:
            assert main([graph, *flags, "--data", str(spikes), *extra, "--out", str(tmp_path / "o")]) == 2
            _one_line_error(capsys, f"{flag} chooses a dataset's samples; --data {spikes} is a file, read whole")
    foreign = str(ROOT / "tests" / "data" / "foreign" / "snntorch_linear.nir")
    argv = [foreign, "--dialect", "snntorch", "--data", str(spikes), "--data-root", str(tmp_path),
            "--out", str(tmp_path)]  # fmt: skip
    assert to_nir.main(argv) == 2
    _one_line_error(capsys, "--data-root chooses a dataset's samples")


def test_calibration_samples_without_calibration_are_refused(trained_digits, tmp_path, capsys):
    """``--calibration-samples`` with a float conversion, or with a --data file (itself the calibration
    data), was ignored."""
    assert to_nir.main([str(trained_digits), "--out", str(tmp_path), "--calibration-samples", "7"]) == 2
    _one_line_error(capsys, "--calibration-samples takes training samples", "a float graph needs none")
    spikes = tmp_path / "x.npy"
    np.save(spikes, np.ones((4, 2, 4), np.float32))
    foreign = str(ROOT / "tests" / "data" / "foreign" / "snntorch_linear.nir")
    argv = [foreign, "--dialect", "snntorch", "--data", str(spikes), "--precision", "fixed", "--calibration-samples",
            "5", "--out", str(tmp_path)]  # fmt: skip
    assert to_nir.main(argv) == 2
    _one_line_error(capsys, "this --data file is itself the calibration data")


_ctrl_c_at_fork: list[int] = []  # non-empty: the hook below sends SIGINT after a fork (registered once)
os.register_at_fork(after_in_parent=lambda: _ctrl_c_at_fork and os.kill(os.getpid(), signal.SIGINT))


def test_ctrl_c_while_a_graph_file_is_forked_for_reading_is_not_lost(graphs):
    """A SIGINT that arrived inside os.fork's handlers (read_graph_file forks a reader) was printed as
    "Exception ignored ... KeyboardInterrupt" and lost: the command went on. It is now held back until
    the fork is done and then raised (CI met it once in the Ctrl-C conversion test above)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    _ctrl_c_at_fork.append(1)
    try:
        with pytest.raises(KeyboardInterrupt):
            load_plan(graphs / "model.nir")
    finally:
        _ctrl_c_at_fork.clear()
        signal.signal(signal.SIGINT, before)
    assert load_plan(graphs / "model.nir").input_shape == (1, 8, 8)
