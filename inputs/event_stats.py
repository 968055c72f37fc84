"""Summary statistics of sets of N-MNIST-like recordings, to compare emulated events with real ones.

Every statistic is computed the same way for real and emulated recordings, over the window
``[0, duration_us)`` that the datasets bin (events after it are left out), so that a statistic's
bias (a centroid is not exactly the digit's position) cancels in the comparison.
:func:`recording_stats` summarises one set; :func:`paired_frame_correlation` compares two sets
recording by recording (the same digits, real and emulated); :func:`compare_stats` turns two
summaries into the numbers that ``bench/emulator_calibration.py`` tabulates and fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.errors import DataError
from inputs.events import Binning, bin_events

DURATION_US = 300_000  # the window that the nmnist datasets bin, µs
SIZE = 34  # N-MNIST sensor side, pixels
SACCADE_WINDOWS_MS = ((0, 100), (100, 200), (200, 300))  # where each saccade's rate peak is looked for, ms
TRACK_BIN_MS = 10  # time bin of the mean event position track, ms
PIXEL_QUANTILES = (50, 75, 90, 99)  # percentiles of the events per active pixel
ISI_QUANTILES = (1, 5, 25, 50)  # percentiles of a pixel's inter-event interval (any polarity)


def _window(events: np.ndarray, duration_us: int) -> np.ndarray:
    return events[(events["t"] >= 0) & (events["t"] < duration_us)]


def recording_stats(
    events: Sequence[np.ndarray], labels: Sequence[int] | np.ndarray, *, duration_us: int = DURATION_US
) -> dict[str, Any]:
    """Statistics of a set of recordings (34x34 event arrays, ``t`` in µs from 0) with their labels.

    Returns plain data: ``events_mean``/``events_std`` (events per recording), ``events_per_class``
    (mean per label 0-9, NaN where a label is absent), ``on_fraction`` (mean over recordings),
    ``rate_per_ms`` (mean events per 1 ms bin, one value per ms), ``peak_ms`` (the time of the
    5 ms-smoothed rate's maximum in each of :data:`SACCADE_WINDOWS_MS`), ``centre_ms`` (the
    rate-weighted mean time in each window: the saccade's timing, steadier than a peak on a
    plateau), ``track_x``/``track_y`` (mean event column/row per :data:`TRACK_BIN_MS` bin, each
    recording's own mean removed, over the recordings with at least 10 events in the bin; NaN
    where fewer than half of them have), ``extent_x``/``extent_y`` (mean over recordings of the
    events' standard deviation in x and y, pixels), ``active_pixels`` (pixels with an event, per
    recording), ``pixel_count_q`` (:data:`PIXEL_QUANTILES` of events per active pixel),
    ``isi_q_us`` (:data:`ISI_QUANTILES` of the time between consecutive events of one pixel),
    ``isi_below_1ms`` (fraction of those intervals under 1 ms) and ``isolated_per_recording`` /
    ``isolated_on_fraction`` (events that are the only one in their 3x3 neighbourhood over the
    whole recording: background noise, mostly).
    """
    labels = np.asarray(labels, np.int64)
    if len(events) == 0 or len(events) != len(labels):
        raise DataError(f"recording_stats needs as many recordings as labels (>= 1), got {len(events)}, {len(labels)}")
    n_ms = duration_us // 1000
    n_track = duration_us // (TRACK_BIN_MS * 1000)
    counts, on_frac, ext_x, ext_y, active, isolated, isolated_on = [], [], [], [], [], [], []
    rate = np.zeros(n_ms)
    tx, ty = np.full((len(events), n_track), np.nan), np.full((len(events), n_track), np.nan)
    per_pixel, isi = [], []
    for i, ev in enumerate(events):
        ev = _window(ev, duration_us)
        counts.append(len(ev))
        if len(ev) == 0:
            on_frac.append(np.nan)
            continue
        x, y, t = ev["x"].astype(np.int64), ev["y"].astype(np.int64), ev["t"]
        on_frac.append(float(ev["p"].mean()))
        rate += np.bincount(t // 1000, minlength=n_ms)[:n_ms]
        k = t // (TRACK_BIN_MS * 1000)
        n_k = np.bincount(k, minlength=n_track)
        ok = n_k >= 10
        sx, sy = np.bincount(k, x, minlength=n_track), np.bincount(k, y, minlength=n_track)
        tx[i, ok], ty[i, ok] = sx[ok] / n_k[ok] - x.mean(), sy[ok] / n_k[ok] - y.mean()
        ext_x.append(x.std())
        ext_y.append(y.std())
        pix = y * SIZE + x
        c = np.bincount(pix, minlength=SIZE * SIZE)
        active.append(int(np.count_nonzero(c)))
        per_pixel.append(c[c > 0])
        order = np.lexsort((t, pix))
        same = pix[order][1:] == pix[order][:-1]
        isi.append(np.diff(t[order])[same])
        grid = np.pad(c.reshape(SIZE, SIZE), 1)
        neigh = sum(grid[1 + dy : 1 + dy + SIZE, 1 + dx : 1 + dx + SIZE] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        lonely = neigh.reshape(-1)[pix] == 1
        isolated.append(int(lonely.sum()))
        isolated_on.append(ev["p"][lonely])
    counts = np.array(counts, np.float64)
    rate /= len(events)
    smooth = np.convolve(rate, np.ones(5) / 5, mode="same")
    per_pixel = np.concatenate(per_pixel) if per_pixel else np.zeros(1)
    isi = np.concatenate(isi) if isi else np.zeros(1)
    isolated_on = np.concatenate(isolated_on) if isolated_on else np.zeros(0)
    track_x, track_y = _nanmean(tx), _nanmean(ty)
    sparse = np.sum(~np.isnan(tx), axis=0) < len(events) / 2
    track_x[sparse], track_y[sparse] = np.nan, np.nan
    window_t = [np.arange(a, b) + 0.5 for a, b in SACCADE_WINDOWS_MS]
    return {
        "recordings": len(events),
        "events_mean": float(counts.mean()),
        "events_std": float(counts.std()),
        "events_per_class": [float(counts[labels == c].mean()) if np.any(labels == c) else np.nan for c in range(10)],
        "on_fraction": float(np.nanmean(on_frac)),
        "rate_per_ms": rate.tolist(),
        "peak_ms": [float(a + np.argmax(smooth[a:b])) + 0.5 for a, b in SACCADE_WINDOWS_MS],
        "centre_ms": [
            float(np.sum(t * rate[a:b]) / max(rate[a:b].sum(), 1e-12))
            for t, (a, b) in zip(window_t, SACCADE_WINDOWS_MS)
        ],
        "track_x": track_x.tolist(),
        "track_y": track_y.tolist(),
        "extent_x": float(np.mean(ext_x)) if ext_x else np.nan,
        "extent_y": float(np.mean(ext_y)) if ext_y else np.nan,
        "active_pixels": float(np.mean(active)) if active else 0.0,
        "pixel_count_q": [float(v) for v in np.percentile(per_pixel, PIXEL_QUANTILES)],
        "isi_q_us": [float(v) for v in np.percentile(isi, ISI_QUANTILES)] if isi.size else [np.nan] * 4,
        "isi_below_1ms": float(np.mean(isi < 1000)) if isi.size else np.nan,
        "isolated_per_recording": float(np.mean(isolated)) if isolated else 0.0,
        "isolated_on_fraction": float(isolated_on.mean()) if isolated_on.size else np.nan,
    }


def _nanmean(a: np.ndarray) -> np.ndarray:
    n = np.sum(~np.isnan(a), axis=0)
    total = np.nansum(a, axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def paired_frame_correlation(
    real: Sequence[np.ndarray], emulated: Sequence[np.ndarray], *, steps: int = 10, duration_us: int = DURATION_US
) -> np.ndarray:
    """Pearson correlation, per pair, of the event-count frames ``(steps, 2, 34, 34)`` (ON and
    OFF apart) of ``real[i]`` and ``emulated[i]`` (recordings of the same digit)."""
    if len(real) != len(emulated):
        raise DataError(f"paired_frame_correlation needs pairs: {len(real)} real vs {len(emulated)} emulated")
    binning = Binning(steps, duration_us, SIZE, SIZE, binary=False, t0_us=0)
    out = np.empty(len(real))
    for i, (a, b) in enumerate(zip(real, emulated)):
        fa, fb = bin_events(a, binning).ravel(), bin_events(b, binning).ravel()
        fa, fb = fa - fa.mean(), fb - fb.mean()
        denom = np.sqrt((fa * fa).sum() * (fb * fb).sum())
        out[i] = (fa * fb).sum() / denom if denom > 0 else 0.0
    return out


def compare_stats(real: dict[str, Any], emulated: dict[str, Any]) -> dict[str, float]:
    """The differences between two :func:`recording_stats` summaries that calibration looks at.

    ``events_ratio`` (emulated / real mean events per recording), ``class_events_log_err`` (mean
    over classes of the absolute log ratio), ``on_fraction_diff``, ``rate_tv`` (total variation
    distance between the two normalised rate curves, smoothed over 5 ms: 0 = same shape, 1 =
    disjoint), ``peak_shift_ms`` and ``centre_shift_ms`` (largest absolute difference of the three
    saccades' peak / centre times), ``track_rmse_px`` (root mean square difference of the mean
    position tracks where both are defined), ``extent_diff_px``,
    ``active_pixels_ratio``, ``pixel_count_log_err`` and ``isi_log_err`` (mean absolute log ratio
    of the quantiles), ``isolated_ratio`` and ``isolated_on_diff``.
    """

    def log_err(a: Sequence[float], b: Sequence[float]) -> float:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        ok = (a > 0) & (b > 0)
        return float(np.mean(np.abs(np.log(b[ok] / a[ok])))) if ok.any() else np.inf

    box = np.ones(5) / 5
    r_rate = np.convolve(real["rate_per_ms"], box, mode="same")
    e_rate = np.convolve(emulated["rate_per_ms"], box, mode="same")
    tv = 0.5 * float(np.abs(r_rate / max(r_rate.sum(), 1e-12) - e_rate / max(e_rate.sum(), 1e-12)).sum())
    track = np.concatenate(
        [np.subtract(real["track_x"], emulated["track_x"]), np.subtract(real["track_y"], emulated["track_y"])]
    )
    track = track[~np.isnan(track)]
    return {
        "events_ratio": emulated["events_mean"] / max(real["events_mean"], 1e-12),
        "class_events_log_err": log_err(real["events_per_class"], emulated["events_per_class"]),
        "on_fraction_diff": emulated["on_fraction"] - real["on_fraction"],
        "rate_tv": tv,
        "peak_shift_ms": float(np.max(np.abs(np.subtract(real["peak_ms"], emulated["peak_ms"])))),
        "centre_shift_ms": float(np.max(np.abs(np.subtract(real["centre_ms"], emulated["centre_ms"])))),
        "track_rmse_px": float(np.sqrt(np.mean(track**2))) if track.size else np.inf,
        "extent_diff_px": float(
            np.hypot(emulated["extent_x"] - real["extent_x"], emulated["extent_y"] - real["extent_y"])
        ),
        "active_pixels_ratio": emulated["active_pixels"] / max(real["active_pixels"], 1e-12),
        "pixel_count_log_err": log_err(real["pixel_count_q"], emulated["pixel_count_q"]),
        "isi_log_err": log_err(real["isi_q_us"], emulated["isi_q_us"]),
        "isolated_ratio": emulated["isolated_per_recording"] / max(real["isolated_per_recording"], 1e-12),
        "isolated_on_diff": float(np.nan_to_num(emulated["isolated_on_fraction"] - real["isolated_on_fraction"])),
    }
