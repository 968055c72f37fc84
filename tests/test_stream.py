"""Streaming event files through a model: same predictions on every target, bounded input, clear errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError
from inputs.events import EVENT_DTYPE
from inputs.formats.arrays import write_npy
from inputs.recording import make_recording
from runtime import stream as stream_cmd
from runtime.stream import SensorMap, StreamConfig, stream
from tests.conftest import build_event_model

TIMING = ["--bin-us", "25000", "--window-steps", "12"]  # 300 ms windows, as the emulated digits


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("recording") / "digits.h5"
    make_recording(path, samples=6)
    return path


def _windows(path, model, target, *extra):
    cfg = stream_cmd.parse_config(StreamConfig, [str(path), "--model", str(model), "--target", target,
                                                 "--progress", "false", *TIMING, *extra], "t", "t")  # fmt: skip
    return stream(cfg)


@pytest.mark.parametrize("precision", ["float", "fixed"])
@pytest.mark.parametrize("reset", ["false", "true"])
def test_same_predictions_on_every_streaming_target(event_model, recording, precision, reset):
    runs = {
        t: _windows(recording, event_model[precision], t, "--reset-per-window", reset)
        for t in ("eventsim", "torch", "onnx")
    }
    first = runs["eventsim"]
    assert first["summary"]["windows"] == 6
    assert sum(w["counts"] != [0] * 10 for w in first["windows"]) >= 4, "a silent model proves nothing"
    for target, got in runs.items():
        assert [w["counts"] for w in got["windows"]] == [w["counts"] for w in first["windows"]], target
    if reset == "true":  # a target without a streaming state runs each window from rest: the same
        ref = _windows(recording, event_model[precision], "reference", "--reset-per-window", "true")
        assert [w["counts"] for w in ref["windows"]] == [w["counts"] for w in first["windows"]]


def test_state_is_kept_across_windows_unless_reset(event_model, recording):
    kept = _windows(recording, event_model["float"], "eventsim")
    reset = _windows(recording, event_model["float"], "eventsim", "--reset-per-window", "true")
    assert kept["windows"][0]["counts"] == reset["windows"][0]["counts"]
    assert [w["counts"] for w in kept["windows"]] != [w["counts"] for w in reset["windows"]]


def test_stateless_target_needs_reset_per_window(event_model, recording):
    with pytest.raises(ConfigError, match="--reset-per-window"):
        _windows(recording, event_model["float"], "reference")


def test_chunk_size_does_not_change_anything(event_model, recording):
    big = _windows(recording, event_model["fixed"], "eventsim")
    small = _windows(recording, event_model["fixed"], "eventsim", "--chunk-events", "777")
    assert [w["counts"] for w in small["windows"]] == [w["counts"] for w in big["windows"]]
    assert [w["events"] for w in small["windows"]] == [w["events"] for w in big["windows"]]
    s = big["summary"]
    assert s["events_read"] == s["events_used"] + sum(s["dropped"].values())
    assert sum(w["events"] for w in big["windows"]) == s["events_used"]


def test_windows_follow_the_labelled_slots(event_model, recording):
    res = _windows(recording, event_model["float"], "eventsim", "--labels", str(recording) + ".labels.json")
    labels = json.loads((recording.parent / "digits.h5.labels.json").read_text())
    assert [w["start_us"] for w in res["windows"]] == [s["start_us"] for s in labels["samples"]]
    assert res["summary"]["scored"]["windows"] == 6
    assert [w["label"] for w in res["windows"]] == [s["label"] for s in labels["samples"]]


def test_cli_writes_lines_summary_and_plot(event_model, recording, tmp_path, capsys):
    out, png = tmp_path / "w.jsonl", tmp_path / "w.png"
    argv = [str(recording), "--model", str(event_model["fixed"]), "--out", str(out), "--plot", str(png), *TIMING,
            "--progress", "false"]  # fmt: skip
    assert stream_cmd.main(argv) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 6 and {"start_us", "end_us", "class", "counts", "latency_ms"} <= set(lines[0])
    summary = json.loads((tmp_path / "w.jsonl.summary.json").read_text())
    for key in ("events_read", "dropped", "windows", "wall_s", "events_per_s", "real_time_factor", "latency_ms"):
        assert key in summary, key
    assert png.stat().st_size > 5000
    assert "real-time factor" in capsys.readouterr().err


def test_a_sensor_size_other_than_the_files_is_noted(event_model, recording):
    """``--sensor-size`` in place of the size the file states (34x34 here) re-centred the crop without a
    word (its help said it was for files that state none); the summary now says so."""
    other = _windows(recording, event_model["fixed"], "eventsim", "--sensor-size", "100x100")["summary"]
    assert other["sensor_size"] == [100, 100]
    assert "--sensor-size 100x100 replaced the 34x34 sensor the file states" in other["note"]
    same = _windows(recording, event_model["fixed"], "eventsim", "--sensor-size", "34x34")["summary"]
    assert same["note"] is None


def test_sensor_mapping():
    m = SensorMap.default((128, 128), (2, 34, 34), None, None, "auto")
    assert (m.factor, m.x0, m.y0, m.polarity) == (3, 13, 13, "split")
    ev = np.zeros(4, EVENT_DTYPE)
    ev["x"], ev["y"], ev["p"] = [13, 114, 12, 60], [13, 114, 60, 60], [1, 0, 1, 0]
    got, outside, unused = m(ev)
    assert (got["x"].tolist(), got["y"].tolist(), outside, unused) == ([0, 33, 15], [0, 33, 15], 1, 0)
    on = SensorMap.default((128, 128), (1, 34, 34), "0,0,68,68", None, "on")
    assert on.factor == 2
    got, outside, unused = on(ev)
    assert (len(got), outside, unused) == (2, 1, 1)
    with pytest.raises(ConfigError, match="does not fit a model with 2 input"):
        SensorMap.default((128, 128), (2, 34, 34), None, None, "merge")


def test_a_crop_smaller_than_the_input_feeds_only_its_own_pixels():
    """``--crop 0,0,10,34`` into a 34x34 model fed sensor columns 0..33 (only the crop's size chose the
    pooling); now the columns outside the crop are dropped and counted, and a note says which of the
    model's columns can receive events. A ``--downsample`` too large for the sensor gets the same note."""
    ev = np.zeros(4, EVENT_DTYPE)
    ev["x"], ev["y"], ev["p"] = [0, 9, 10, 33], [0, 33, 5, 5], [1, 1, 1, 1]
    m = SensorMap.default((34, 34), (2, 34, 34), "0,0,10,34", None, "auto")
    assert (m.factor, m.span_x, m.span_y) == (1, 10, 34)
    got, outside, unused = m(ev)
    assert (got["x"].tolist(), got["y"].tolist(), outside, unused) == ([0, 9], [0, 33], 2, 0)
    assert "events reach only columns 0..9 and rows 0..33 of the model's 34x34 input" in m.coverage_note((34, 34))
    pooled = SensorMap.default((34, 34), (2, 8, 8), "3,0,9,34", 2, "auto")  # 9 columns at 2x2: 8 fed
    assert (pooled.span_x, pooled.span_y) == (8, 16)
    ev["x"], ev["y"] = [3, 10, 11, 2], [0, 5, 5, 5]
    got, outside, _ = pooled(ev)
    assert (got["x"].tolist(), got["y"].tolist(), outside) == ([0, 3], [0, 2], 2)
    whole = SensorMap.default((34, 34), (2, 34, 34), None, None, "auto")
    assert whole.coverage_note((34, 34)) is None and whole.span_x == 34
    too_far = SensorMap.default((34, 34), (2, 34, 34), None, 100, "auto")  # the sensor on 2x2 of 34x34
    assert "columns 16..17 and rows 16..17" in too_far.coverage_note((34, 34))
    with pytest.raises(ConfigError, match="narrower than one model pixel pooling 4x4"):
        SensorMap.default((34, 34), (2, 8, 8), "0,0,3,34", 4, "auto")


REAL = {  # file: (extra flags, events the eventdata README states)
    "aedat2/dvs128_walking.aedat": ([], 19_182),
    "aedat2/davis240c_translating_boxes.aedat": ([], 162_771),
    "aedat4/dvxplorer_sample.aedat4": ([], 111_954),
    "evt2/gen3_sample.raw": ([], 539_481),
    "evt3/gen41_sample.raw": ([], 219_596),
    "dat/ncars_sample.dat": (["--sensor-size", "120x100"], 2_009),
    "dvs128_bs2/clip_1450ms.bin": (["--sensor-size", "128x128"], 63_471),
    "nmnist/single_sample.bin": (["--sensor-size", "34x34"], 4_325),
}


@pytest.mark.parametrize("name", list(REAL))
def test_real_recordings_stream_identically_on_two_targets(eventdata, event_model, name):
    extra, n = REAL[name]
    a = _windows(eventdata / name, event_model["fixed"], "eventsim", *extra)
    b = _windows(eventdata / name, event_model["fixed"], "torch", *extra)
    assert a["summary"]["events_read"] == n
    assert a["summary"]["events_used"] > 0.3 * n
    assert [w["counts"] for w in a["windows"]] == [w["counts"] for w in b["windows"]]


def test_bad_input_is_a_clear_error(event_model, tmp_path, capsys):
    model = str(event_model["float"])
    garbage = tmp_path / "garbage.aedat"
    garbage.write_bytes(b"#!AER-DAT2.0\r\n" + bytes(range(256)) * 3 + b"\x01")
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    nosize = tmp_path / "x.npy"
    ev = np.zeros(10, EVENT_DTYPE)
    ev["t"] = np.arange(10)
    write_npy(nosize, ev)
    swapped = tmp_path / "swapped.json"
    swapped.write_text(json.dumps({"samples": [{"start_us": 300_000, "end_us": 600_000, "label": 1},
                                               {"start_us": 0, "end_us": 300_000, "label": 2}]}))  # fmt: skip
    (tmp_path / "list.json").write_text(json.dumps([{"start_us": 0, "end_us": 300_000, "label": 1}]))
    (tmp_path / "float.json").write_text(json.dumps({"samples": [{"start_us": 0, "end_us": 300_000, "label": 1.7}]}))
    cases = [
        ([str(tmp_path / "missing.h5"), "--model", model], "does not exist"),
        ([str(empty), "--model", model], "empty"),
        ([str(nosize), "--model", model], "--sensor-size"),
        ([str(nosize), "--model", model, "--format", "evt3"], "does not look like evt3"),
        ([str(nosize), "--model", model, "--sensor-size", "big"], "WxH"),
        ([str(nosize), "--model", model, "--sensor-size", "34x34", "--target", "tpu"], "unknown target"),
        ([str(nosize), "--model", str(tmp_path / "none.nir"), "--sensor-size", "34x34"], "does not exist"),
        (
            [str(nosize), "--model", model, "--sensor-size", "34x34", "--labels", str(tmp_path / "no.json")],
            f"labels file {tmp_path / 'no.json'} does not exist",
        ),
        # a labels file that is not one: UnicodeDecodeError, KeyError: 'samples'; a float label was truncated
        *(
            ([str(nosize), "--model", model, "--sensor-size", "34x34", "--labels", str(bad)], message)
            for bad, message in [
                (Path(model), "is not JSON ("),
                (tmp_path / "list.json", "holds no list 'samples'"),
                (tmp_path / "float.json", "slot 0 must give the integers start_us, end_us, label, got {'start_us': 0"),
            ]
        ),
        # slots out of time order: each window was scored against another slot's label
        (
            [str(nosize), "--model", model, "--sensor-size", "34x34", "--labels", str(swapped)],
            "slot 1 (0..300000 µs) is empty or starts before the slot before it ends",
        ),
        # the plot written over the windows (or their summary)
        (
            [
                str(nosize),
                "--model",
                model,
                "--sensor-size",
                "34x34",
                "--out",
                str(tmp_path / "w"),
                "--plot",
                str(tmp_path / "w.summary.json"),
            ],
            "is a file --out writes",
        ),
        # one recording: ignored before, without a word
        (
            [str(nosize), "--model", model, "--sensor-size", "34x34", "--file-labels", "x.csv"],
            "one recording's time slots",
        ),
    ]
    for argv, message in cases:
        assert stream_cmd.main([*argv, "--progress", "false"]) == 2, argv
        assert message in capsys.readouterr().err, argv
    # garbage words after a valid header: decoded or dropped and counted, never a crash
    code = stream_cmd.main([str(garbage), "--model", model, "--sensor-size", "128x128", "--progress", "false", *TIMING])
    err = capsys.readouterr().err
    assert code in (0, 2) and ("error:" in err or "windows" in err)


@pytest.mark.lava
def test_lava_streams_windows_from_rest_like_eventsim(event_model, tmp_path):
    from targets import unavailable_reason

    if unavailable_reason("lava"):
        pytest.skip(f"lava is unavailable: {unavailable_reason('lava')}")
    path = tmp_path / "two.h5"
    make_recording(path, samples=2)
    a = _windows(path, event_model["fixed"], "eventsim", "--reset-per-window", "true")
    b = _windows(path, event_model["fixed"], "lava", "--reset-per-window", "true")
    assert [w["counts"] for w in a["windows"]] == [w["counts"] for w in b["windows"]]
    assert any(w["counts"] != [0] * 10 for w in a["windows"])


@pytest.fixture(scope="module")
def event_model_li(tmp_path_factory):
    """The same event CSNN with an LI readout: each window's per-class scores are its LI membrane summed."""
    return build_event_model(tmp_path_factory.mktemp("event_model_li"), readout="li")


@pytest.mark.parametrize("precision", ["float", "fixed"])
def test_li_readout_streams_identically(event_model_li, recording, precision):
    """Window scores (floats in float precision, integers in fixed) are identical on every streaming
    target, with the LI membrane kept from window to window; every window predicts a class."""
    runs = {t: _windows(recording, event_model_li[precision], t) for t in ("eventsim", "torch", "onnx")}
    first = runs["eventsim"]
    assert first["summary"]["output"] == "scores" and first["summary"]["windows"] == 6
    assert all(w["class"] is not None and isinstance(w["tied"], bool) for w in first["windows"])
    kind = float if precision == "float" else int
    assert all(isinstance(c, kind) for w in first["windows"] for c in w["counts"])
    for target, got in runs.items():
        assert [w["counts"] for w in got["windows"]] == [w["counts"] for w in first["windows"]], target
    reset = _windows(recording, event_model_li[precision], "eventsim", "--reset-per-window", "true")
    ref = _windows(recording, event_model_li[precision], "reference", "--reset-per-window", "true")
    assert [w["counts"] for w in ref["windows"]] == [w["counts"] for w in reset["windows"]]
    assert [w["counts"] for w in reset["windows"]] != [w["counts"] for w in first["windows"]]  # state was kept


def test_recording_of_real_nmnist_digits(eventdata, tmp_path, capsys):
    """``--source nmnist``: real recordings laid end to end in 300 ms slots, labels from labels.csv."""
    import json

    from core.errors import ConfigError, DataError
    from inputs.events import EVENT_DTYPE
    from inputs.formats.nmnist import read_nmnist, write_nmnist
    from inputs.formats.readers import read_events

    path = tmp_path / "real.h5"
    rec = make_recording(path, samples=3, source="nmnist", root=str(eventdata / "nmnist" / "train"), split="all")
    assert [s["label"] for s in rec["samples"]] == [5, 0, 4]  # recordings 1..3 (MNIST's first three digits)
    events = read_events(path)
    first = read_nmnist(eventdata / "nmnist" / "train" / "1.bin")
    assert np.array_equal(events["t"][: int((first["t"] < 300_000).sum())], first["t"][first["t"] < 300_000])
    assert events["t"].max() < 3 * 300_000 and events["t"][-1] >= 2 * 300_000
    assert json.loads((tmp_path / "real.h5.labels.json").read_text())["source"] == "nmnist"
    with pytest.raises(ConfigError, match="--root"):
        make_recording(tmp_path / "x.h5", source="nmnist")
    # a folder named for a generated source was not read, and an event off the 34 x 34 frame was kept
    with pytest.raises(ConfigError, match="--source nmnist_emulated is generated and would not read it"):
        make_recording(tmp_path / "x.h5", source="nmnist_emulated", root=str(eventdata / "nmnist" / "train"))
    (tmp_path / "f").mkdir()
    write_nmnist(tmp_path / "f" / "a.bin", np.array([(0, 3, 4, 1), (5, 40, 4, 0)], dtype=EVENT_DTYPE))
    (tmp_path / "f" / "labels.csv").write_text("file,label\na.bin,1\n")
    with pytest.raises(DataError, match=r"a\.bin: 1 event\(s\) lie outside N-MNIST's 34 x 34 frame \(x up to 40"):
        make_recording(tmp_path / "x.h5", source="nmnist", root=str(tmp_path / "f"), split="all")
    # fewer recordings than asked for: the message says so (it read as if all were written)
    from inputs import recording

    write_nmnist(tmp_path / "f" / "a.bin", np.array([(0, 3, 4, 1), (5, 30, 4, 0)], dtype=EVENT_DTYPE))
    argv = [
        str(tmp_path / "y.h5"),
        "--samples",
        "5",
        "--source",
        "nmnist",
        "--root",
        str(tmp_path / "f"),
        "--split",
        "all",
    ]
    assert recording.main(argv) == 0
    assert "1 nmnist digits (all that --split all holds; 5 asked for)" in capsys.readouterr().out


# --- EVT 2.0: decode, map and bin in one pass (inputs.formats.evt2.WindowBinner) -------------------


def _fused_windows(path, mapping: SensorMap, steps: int, window_us: int, binary: bool, chunk_words: int,
                   fmt: str = "evt2"):  # fmt: skip
    """Every window's (start, frames, events) from the fused pass over the file's words, and the binner."""
    import importlib

    from inputs.formats.evt2 import iter_windows

    module = importlib.import_module(f"inputs.formats.{fmt}")
    f = getattr(module, f"open_{fmt}")(path)
    b = module.WindowBinner((f.width, f.height), mapping.x0, mapping.y0, mapping.factor, mapping.width,
                            mapping.height, mapping.channels, mapping.polarity, steps, window_us, binary,
                            (mapping.span_x, mapping.span_y))  # fmt: skip
    return list(iter_windows(f, b, chunk_words)), b


def _reference_windows(path, mapping: SensorMap, steps: int, window_us: int, binary: bool, fmt: str = "evt2"):
    """The same from the generic reader (its drops), the sensor map, then the binning, one window at a time."""
    from inputs.events import Binning
    from inputs.formats.readers import open_events

    reader = open_events(path)
    assert reader.format == fmt
    events = reader.read_all()
    mapped, outside, unused = mapping(events)
    start = int(events["t"][0]) - int(events["t"][0]) % window_us
    out = []
    while start <= events["t"][-1]:
        sel = mapped[(mapped["t"] >= start) & (mapped["t"] < start + window_us)]
        binning = Binning(steps, window_us, mapping.height, mapping.width, binary=binary, t0_us=start)
        out.append((start, mapping.frames(sel, binning), len(sel)))
        start += window_us
    return out, reader.counters, {"outside_crop": outside, "unused_polarity": unused}


MAPPINGS = [  # model input shape, crop, downsample, polarity, steps, window µs, binary, words per chunk
    ((2, 34, 34), None, None, "auto", 8, 300_000, True, 1 << 16),
    ((2, 34, 34), None, None, "split", 4, 4_000, False, 777),
    ((1, 34, 34), "100,50,300,200", None, "merge", 3, 5_000, True, 1000),
    ((1, 20, 30), None, None, "on", 7, 3_001, False, 5000),
    ((1, 64, 64), "0,0,640,480", 3, "off", 5, 2_500, True, 333),
    ((1, 64, 64), "180,90,50,60", None, "merge", 4, 5_000, True, 4096),  # a crop smaller than the input
    ((2, 64, 64), "200,100,101,80", 2, "split", 4, 5_000, False, 999),  # ... at 2x2 (100 of its columns fed)
]


def _assert_fused_equals_generic(path, mapping, steps, window_us, binary, chunk, fmt):
    """The fused pass's windows (start, frames, events), counters and drops are the generic path's."""
    got, binner = _fused_windows(path, mapping, steps, window_us, binary, chunk, fmt)
    want, counters, dropped = _reference_windows(path, mapping, steps, window_us, binary, fmt)
    assert [(s, n) for s, _, n in got] == [(s, n) for s, _, n in want], path
    for (s, a, _), (_, b, _) in zip(got, want):
        assert a.dtype == b.dtype and np.array_equal(a, b), (path, s)
    assert binner.counters == {k: counters[k] for k in binner.counters}, path
    assert binner.dropped == dropped, path
    assert sum(n for *_, n in got) > 0


@pytest.mark.parametrize("shape,crop,factor,polarity,steps,window_us,binary,chunk", MAPPINGS)
def test_fused_evt2_pass_equals_decode_map_bin(tmp_path, eventdata_or_none, shape, crop, factor, polarity, steps,
                                               window_us, binary, chunk):  # fmt: skip
    """Frames, events per window and every count of the fused pass are those of the generic reader, then
    ``SensorMap``, then ``SensorMap.frames``: on the Gen3 recording (when present) and on a synthetic file
    with events before the first EVT_TIME_HIGH, skipped words, time going backwards and events outside
    the sensor; chunk boundaries fall inside windows."""
    from tests.test_prophesee import evt2_words, write_evt2

    files = [write_evt2(tmp_path / "synthetic.raw", evt2_words(seed=2))]
    if eventdata_or_none is not None:
        files.append(str(eventdata_or_none / "evt2" / "gen3_sample.raw"))
    for path in files:
        _assert_fused_equals_generic(path, SensorMap.default((640, 480), shape, crop, factor, polarity), steps,
                                     window_us, binary, chunk, "evt2")  # fmt: skip


@pytest.fixture
def eventdata_or_none():
    from tests.conftest import EVENTDATA

    return EVENTDATA if EVENTDATA.is_dir() else None


def _same_stream(a, b):
    strip = [{k: v for k, v in w.items() if k != "latency_ms"} for w in a["windows"]]
    assert strip == [{k: v for k, v in w.items() if k != "latency_ms"} for w in b["windows"]]
    for key in ("events_read", "events_used", "dropped", "windows", "recording_s", "classes", "tied_windows"):
        assert a["summary"][key] == b["summary"][key], key


def _fused_as_generic(path, model, *extra, fused_extra=()):
    """The stream of ``path`` with the fused pass (and ``fused_extra``) and without: the same; the fused one."""
    fused = _windows(path, model, "eventsim", *extra, *fused_extra)
    _same_stream(fused, _windows(path, model, "eventsim", "--fused", "false", *extra))
    return fused


def _bad_word_on_both(path, model, timing, tmp_path, capsys, offset, kind):
    """A word of an unknown type: exit 2 with the file, its byte offset and its type, on both paths."""
    for fused_flag in ("true", "false"):
        argv = [path, "--model", str(model), "--progress", "false", "--fused", fused_flag, *timing]
        assert stream_cmd.main([*argv, "--out", str(tmp_path / "w.jsonl")]) == 2
        err = capsys.readouterr().err
        assert "bad.raw" in err and f"byte offset {offset}" in err and f"word type {kind}" in err, err


@pytest.mark.parametrize("extra", [
    [*TIMING],
    ["--bin-us", "500", "--window-steps", "8", "--chunk-events", "777"],
    ["--bin-us", "1000", "--window-steps", "4", "--crop", "100,100,340,340", "--reset-per-window", "true"],
    ["--bin-us", "20000", "--window-steps", "4", "--t0-us", "1000000", "--sensor-size", "600x400"],
])  # fmt: skip
def test_evt2_streams_identically_with_and_without_the_fused_pass(eventdata, event_model, extra):
    path = eventdata / "evt2" / "gen3_sample.raw"
    fused = _fused_as_generic(path, event_model["fixed"], *extra)
    assert fused["summary"]["events_used"] > 0 and any(w["counts"] != [0] * 10 for w in fused["windows"])


def test_corrupt_evt2_streams_identically_with_and_without_the_fused_pass(event_model, tmp_path, capsys):
    """Events outside the sensor, time going backwards, a truncated last word: dropped and counted the
    same way on both paths; a word of an unknown type is an error naming its byte offset on both."""
    from tests.test_prophesee import EVT2_HEADER, evt2_words, write_evt2

    path = write_evt2(tmp_path / "odd.raw", evt2_words(seed=3), tail=b"\x07\x07")
    timing = ["--bin-us", "1000", "--window-steps", "4"]
    fused = _fused_as_generic(path, event_model["fixed"], *timing, fused_extra=("--chunk-events", "1000"))
    dropped = fused["summary"]["dropped"]
    assert dropped["outside_sensor"] > 0 and dropped["time_backwards"] > 0 and dropped["truncated_bytes"] == 2
    bad = evt2_words(seed=3, extras=False)
    bad[len(bad) // 2] = 0x3 << 28
    offset = len(EVT2_HEADER) + 4 * (len(bad) // 2)
    path = write_evt2(tmp_path / "bad.raw", bad)
    _bad_word_on_both(path, event_model["fixed"], timing, tmp_path, capsys, offset, "0x3")


# --- EVT 3.0: the same fused pass (inputs.formats.evt3.WindowBinner) ------------------------------


@pytest.mark.parametrize("shape,crop,factor,polarity,steps,window_us,binary,chunk", MAPPINGS)
def test_fused_evt3_pass_equals_decode_map_bin(tmp_path, eventdata_or_none, shape, crop, factor, polarity, steps,
                                               window_us, binary, chunk):  # fmt: skip
    """As for EVT 2.0: on the Gen4.1 recording (when present) and on a synthetic file with vectors (one
    reaching past the sensor's right edge), skipped words, a y outside the sensor and the time's high
    part wrapping around; chunk boundaries fall inside windows (and between a vector and its base)."""
    from tests.test_prophesee import evt3_words, write_evt3

    files = [write_evt3(tmp_path / "synthetic.raw", evt3_words(seed=2, early=False))]
    if eventdata_or_none is not None:
        files.append(str(eventdata_or_none / "evt3" / "gen41_sample.raw"))
    for path in files:
        _assert_fused_equals_generic(path, SensorMap.default((1280, 720), shape, crop, factor, polarity), steps,
                                     window_us, binary, chunk, "evt3")  # fmt: skip


@pytest.mark.parametrize("extra", [
    [*TIMING],
    ["--bin-us", "500", "--window-steps", "8", "--chunk-events", "777", "--polarity", "split"],
    ["--bin-us", "1000", "--window-steps", "4", "--crop", "300,100,340,340", "--downsample", "3",
     "--chunk-events", "4096", "--reset-per-window", "true"],
    ["--bin-us", "2000", "--window-steps", "5", "--t0-us", "11000000", "--sensor-size", "1000x600"],
])  # fmt: skip
def test_evt3_streams_identically_with_and_without_the_fused_pass(eventdata, event_model, extra):
    path = eventdata / "evt3" / "gen41_sample.raw"
    fused = _fused_as_generic(path, event_model["fixed"], *extra)
    assert fused["summary"]["format"] == "evt3" and fused["summary"]["events_used"] > 0


def test_corrupt_evt3_streams_identically_with_and_without_the_fused_pass(event_model, tmp_path, capsys):
    """Events outside the sensor and a truncated last word: dropped and counted the same way on both
    paths; a word of an unknown type is an error naming its byte offset on both."""
    from tests.test_prophesee import EVT3_HEADER, evt3_words, write_evt3

    path = write_evt3(tmp_path / "odd.raw", evt3_words(seed=3, early=False), tail=b"\x07")
    timing = ["--bin-us", "1000", "--window-steps", "4"]
    fused = _fused_as_generic(path, event_model["fixed"], *timing, fused_extra=("--chunk-events", "1000"))
    dropped = fused["summary"]["dropped"]
    assert dropped["outside_sensor"] > 0 and dropped["truncated_bytes"] == 1
    bad = evt3_words(seed=3, early=False)
    bad[len(bad) // 2] = 0x1 << 12
    offset = len(EVT3_HEADER) + 2 * (len(bad) // 2)
    path = write_evt3(tmp_path / "bad.raw", bad)
    _bad_word_on_both(path, event_model["fixed"], timing, tmp_path, capsys, offset, "0x1")


def test_events_that_span_no_time_have_no_real_time_factor(event_model, tmp_path, capsys):
    """A recording whose events share one timestamp (a header test file holds four such) lasts
    0 s: its real-time factor is undefined, not 0x ("infinitely slow")."""
    path = tmp_path / "instant.npy"
    ev = np.zeros(4, EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"] = [1, 2, 3, 4], [5, 6, 7, 8], 1000
    write_npy(path, ev)
    argv = [str(path), "--model", str(event_model["float"]), "--sensor-size", "34x34", "--out",
            str(tmp_path / "w.jsonl"), "--progress", "false", *TIMING]  # fmt: skip
    assert stream_cmd.main(argv) == 0
    summary = json.loads((tmp_path / "w.jsonl.summary.json").read_text())
    assert (summary["recording_s"], summary["real_time_factor"], summary["windows"]) == (0.0, None, 1)
    assert "real-time factor n/a (the events span no time)" in capsys.readouterr().err


def test_a_glob_the_shell_expanded_says_to_quote_it(event_model, recording, capsys):
    """``runtime.stream rec/*.h5`` unquoted reaches the command as several files: argparse's
    'unrecognized arguments' then says what to do."""
    with pytest.raises(SystemExit) as exit_:
        stream_cmd.main([str(recording), str(recording), "--model", str(event_model["float"])])
    assert exit_.value.code == 2
    assert "quote the pattern ('rec/*.h5') or name their folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a flag the command does not take is not a glob
        stream_cmd.main([str(recording), "--steps", "8", "--model", str(event_model["float"])])
    assert capsys.readouterr().err.rstrip().endswith("error: unrecognized arguments: --steps 8")


def test_a_graph_named_as_the_recording_says_to_name_it_with_model(event_model, capsys):
    """The two swapped: the graph's HDF5 file holds no events, and the message says what it is."""
    graph = str(event_model["float"])
    assert stream_cmd.main([graph, "--model", graph, "--progress", "false"]) == 2
    assert (
        "holds the events (candidates: none); expected a compound t, x, y, p dataset or a group with t, x, y, p datasets; it is a NIR graph: name it with --model"
        in capsys.readouterr().err
    )


def test_a_graph_trained_on_encoded_frames_is_streamed_with_a_note(digits_graphs, event_model, recording, capsys):
    """The digits student (images through a spike encoder) maps and runs on events, but what it
    predicts there means little: the summary and the message say so; an event model has no note."""
    argv = [str(recording), "--model", str(digits_graphs / "float.nir"), "--progress", "false"]
    assert stream_cmd.main(argv) == 0
    assert "note: the graph was trained on 'digits', frames made by the 'regular' encoder" in capsys.readouterr().err
    assert _windows(recording, event_model["float"], "eventsim")["summary"]["note"] is None
