r"""An event-camera (DVS) emulator: N-MNIST-style recordings from static images.

N-MNIST (Orchard et al., 2015) filmed MNIST digits on a monitor with an ATIS sensor that made
three saccades along a triangle, 100 ms each. Here the sensor stays still and the digit moves:

- **Scene.** The image (values in [0, 1], white ink on black) is resized to ``digit_size``
  square by bilinear interpolation and drawn on a black ``canvas_size`` square canvas whose top
  left corner it occupies at position ``base + d(t)``. The offset ``d(t)`` runs at constant
  speed along the triangle ``(0, 0) -> (a/2, a) -> (a, 0) -> (0, 0)`` (``a`` =
  ``saccade_amplitude_px``; x right, y down), one side per saccade of ``saccade_us``; ``base``
  centres the path's bounding box. Sub-pixel positions are rendered by bilinear interpolation,
  so the intensity ``I(x, y, t)`` of every pixel changes smoothly.

- **Pixel.** Each pixel compares its log intensity with the level it memorised at its last
  event (at ``t = 0`` the pixel is adapted: the memorised level is the current one):

  .. math::

      L(t) = \ln(I(t) + \varepsilon), \qquad
      \text{ON event when } L(t) - L_\text{ref} \ge C_\text{on},\ L_\text{ref} \mathrel{+}= C_\text{on};
      \quad \text{OFF event when } L_\text{ref} - L(t) \ge C_\text{off},\ L_\text{ref} \mathrel{-}= C_\text{off}

  ``C_on`` and ``C_off`` are drawn per pixel (fixed-pattern mismatch) as ``threshold +
  threshold_sigma * N(0, 1)``, clipped below at ``threshold / 4``, from the seed; the same
  "sensor" is used for every image of a batch.

- **Time.** Time advances in substeps of ``substep_us``; within one, ``L`` is taken to change
  linearly from its old to its new value. If ``L`` crosses ``k`` levels during a substep the
  pixel emits ``k`` events, each stamped (whole µs, rounded down) at the moment of its crossing
  by linear interpolation. With ``refractory_us > 0`` a crossing less than ``refractory_us``
  after the pixel's previous event emits nothing, but the memorised level still moves (the
  change during the refractory period is lost, as in a real pixel held in reset).

- **Noise.** Optionally, background events at ``noise_rate_hz`` per pixel (a Poisson process,
  uniform position and time, ON with probability ``noise_on_fraction``) that do not disturb the
  pixel state.

Options added to match real N-MNIST recordings (``bench/emulator_calibration.py`` fits them; each
one's default leaves the output above unchanged, bit for bit):

- ``ink="dark"`` shows the digit dark on a bright screen (intensity ``1 - image``): a moving
  stroke then makes OFF events on its leading edge and ON events on its trailing edge, as in the
  real recordings.
- ``blur_px`` blurs the displayed digit with a Gaussian (display pixels, optics, focus).
- ``threshold_off_ratio`` makes the mean OFF threshold ``threshold_off_ratio * threshold``.
- ``moves`` replaces the constant-speed triangle by a list of moves ``(start µs, end µs, dx px,
  dy px)`` whose displacements add up (moves may overlap in time, so x and y can move on their
  own schedules, as a pan-tilt unit's two motors do); ``move_profile="minjerk"`` gives each move
  the smooth minimum-jerk position ``10 tau^3 - 15 tau^4 + 6 tau^5`` (``tau`` = fraction of the
  move's time) instead of constant speed. The path's bounding box is centred on the canvas, then
  moved by ``(shift_x_px, shift_y_px)`` (which also applies to the triangle).
- ``time_jitter_us`` shifts each saccade (a maximal interval during which some move runs; the
  triangle has three of ``saccade_us``) of each recording by its own uniform random whole number of
  µs in ``[-time_jitter_us / 2, time_jitter_us / 2]``: the events of that saccade move, those
  pushed out of ``[0, duration_us)`` are dropped. Real recordings' saccades start a few ms apart
  from one recording to the next.
- ``pixel_tau_us`` low-pass filters each pixel's log intensity (first order, time constant
  ``pixel_tau_us``, applied per substep: ``L <- L_prev + (1 - exp(-substep/tau)) (L - L_prev)``),
  as a photoreceptor's limited bandwidth does: a passing edge's events spread out in time.

Everything random comes from ``seed`` (the sensor: thresholds) and from ``(seed, id)`` per
recording (noise, jitter; ``id`` defaults to the image's position in the batch); the same seed
gives the same events, bit for bit. Output events are :data:`inputs.events.EVENT_DTYPE`, sorted
by ``t``, in ``[0, duration_us)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ConfigError, DataError
from inputs.events import EVENT_DTYPE, _from_dict

INKS = ("light", "dark")
MOVE_PROFILES = ("linear", "minjerk")
VERSION_1_FIELDS = (
    "canvas_size", "digit_size", "saccade_amplitude_px", "saccade_us", "substep_us", "threshold",
    "threshold_sigma", "log_eps", "noise_rate_hz", "refractory_us",
)  # fmt: skip
"""The fields of the first emulator. Later fields appear in :meth:`EmulatorConfig.to_dict` only
when they differ from their defaults, so descriptions and caches written before them stay valid."""


@dataclass(frozen=True)
class EmulatorConfig:
    """Parameters of the emulated sensor and of the digit's motion (see the module docstring)."""

    canvas_size: int = 34  # sensor height = width, pixels
    digit_size: int = 24  # the image is resized to this square, pixels
    saccade_amplitude_px: float = 4.0  # side scale a of the triangle, pixels
    saccade_us: int = 100_000  # duration of each of the three saccades, µs
    substep_us: int = 1_000  # simulation step, µs
    threshold: float = 0.2  # mean contrast threshold C, in units of ln(intensity)
    threshold_sigma: float = 0.02  # per-pixel standard deviation of C, ln units
    log_eps: float = 0.2  # epsilon in ln(I + eps); sets how dark "black" is
    noise_rate_hz: float = 0.0  # background noise events per pixel per second
    refractory_us: int = 0  # dead time of a pixel after an event, µs (0 = none)
    # Added for the N-MNIST calibration; these defaults give the version-1 events bit for bit.
    ink: str = "light"  # "light": intensity = image (white digit on black); "dark": intensity = 1 - image
    blur_px: float = 0.0  # standard deviation of a Gaussian blur of the displayed digit, pixels (0 = none)
    threshold_off_ratio: float = 1.0  # mean OFF threshold / mean ON threshold
    moves: tuple[tuple[int, int, float, float], ...] = ()  # (start µs, end µs, dx px, dy px); () = the triangle
    move_profile: str = "linear"  # position along each move: "linear" (constant speed) or "minjerk"
    shift_x_px: float = 0.0  # offset of the path from the centred position, pixels, right
    shift_y_px: float = 0.0  # offset of the path from the centred position, pixels, down
    time_jitter_us: int = 0  # each saccade of each recording is shifted by U{-jitter/2, ..., jitter/2} µs
    pixel_tau_us: float = 0.0  # time constant of a first-order low-pass of each pixel's log intensity, µs
    noise_on_fraction: float = 0.5  # probability that a noise event is ON

    def __post_init__(self) -> None:
        for name in ("canvas_size", "digit_size", "saccade_us", "substep_us"):
            _check_number(self, name, int, minimum=1)
        for name in ("refractory_us", "time_jitter_us"):
            _check_number(self, name, int, minimum=0)
        for name in ("saccade_amplitude_px", "threshold_sigma", "noise_rate_hz", "blur_px", "pixel_tau_us"):
            _check_number(self, name, float, minimum=0.0)
        for name in ("threshold", "log_eps", "threshold_off_ratio"):
            _check_number(self, name, float, minimum=0.0, strict=True)
        for name in ("shift_x_px", "shift_y_px"):
            _check_number(self, name, float, minimum=-float(self.canvas_size))
        _check_number(self, "noise_on_fraction", float, minimum=0.0)
        if self.noise_on_fraction > 1:
            raise ConfigError(f"EmulatorConfig.noise_on_fraction must be in [0, 1], got {self.noise_on_fraction!r}")
        for name, allowed in (("ink", INKS), ("move_profile", MOVE_PROFILES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"EmulatorConfig.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        object.__setattr__(self, "moves", _check_moves(self.moves))
        if self.saccade_us % self.substep_us:
            raise ConfigError(
                f"EmulatorConfig.saccade_us ({self.saccade_us}) must be a multiple of substep_us ({self.substep_us})"
            )
        if not self.moves and self.digit_size + self.saccade_amplitude_px > self.canvas_size:
            raise ConfigError(
                f"EmulatorConfig: digit_size {self.digit_size} + saccade_amplitude_px {self.saccade_amplitude_px} "
                f"does not fit on the {self.canvas_size}-pixel canvas"
            )

    @property
    def duration_us(self) -> int:
        """Length of one recording (three saccades), µs."""
        return 3 * self.saccade_us

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; :meth:`from_dict` rebuilds the same config.

        Fields added after the first version are left out while they hold their defaults (see
        :data:`VERSION_1_FIELDS`)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in VERSION_1_FIELDS or value != f.default:
                out[f.name] = [list(m) for m in value] if f.name == "moves" else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmulatorConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        data = dict(data)
        for f in dataclasses.fields(cls):  # JSON may turn 4.0 into 4
            if f.type == "float" and isinstance(data.get(f.name), int) and not isinstance(data[f.name], bool):
                data[f.name] = float(data[f.name])
        return _from_dict(cls, data)


def _check_moves(moves: Any) -> tuple[tuple[int, int, float, float], ...]:
    """``moves`` as a tuple of ``(start µs, end µs, dx px, dy px)`` tuples (JSON gives lists)."""
    if not isinstance(moves, (tuple, list)):
        raise ConfigError(f"EmulatorConfig.moves must be a list of (start_us, end_us, dx_px, dy_px), got {moves!r}")
    out = []
    for i, move in enumerate(moves):
        ok = isinstance(move, (tuple, list)) and len(move) == 4
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in move[:2])
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in move[2:])
        if not ok or not 0 <= move[0] < move[1]:
            raise ConfigError(
                f"EmulatorConfig.moves[{i}] must be (start_us, end_us, dx_px, dy_px) with integers "
                f"0 <= start_us < end_us and finite displacements, got {move!r}"
            )
        out.append((int(move[0]), int(move[1]), float(move[2]), float(move[3])))
    return tuple(out)


def _check_number(cfg: Any, name: str, tp: type, *, minimum: float, strict: bool = False) -> None:
    value = getattr(cfg, name)
    ok_type = isinstance(value, tp) and not isinstance(value, bool)
    if tp is float:
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok_type or value < minimum or (strict and value == minimum):
        rel = ">" if strict else ">="
        raise ConfigError(f"EmulatorConfig.{name} must be a {tp.__name__} {rel} {minimum}, got {value!r}")


def digit_position(cfg: EmulatorConfig, t_us: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """Canvas position ``(x, y)`` (pixels, float64) of the digit's top left corner at ``t_us`` µs."""
    if cfg.moves:
        offset = _move_offsets(cfg, t_us)
        lo, hi = _move_extent(cfg)
        base = (cfg.canvas_size - cfg.digit_size) / 2 - (lo + hi) / 2
        return base[0] + cfg.shift_x_px + offset[..., 0], base[1] + cfg.shift_y_px + offset[..., 1]
    a = cfg.saccade_amplitude_px
    vertices = np.array([[0.0, 0.0], [a / 2, a], [a, 0.0], [0.0, 0.0]])  # (x, y) offsets
    t = np.asarray(t_us, dtype=np.float64)
    seg = np.clip(t // cfg.saccade_us, 0, 2).astype(np.int64)
    frac = np.clip(t / cfg.saccade_us - seg, 0.0, 1.0)
    offset = vertices[seg] + (vertices[seg + 1] - vertices[seg]) * frac[..., None]
    base = (cfg.canvas_size - cfg.digit_size - a) / 2
    return base + cfg.shift_x_px + offset[..., 0], base + cfg.shift_y_px + offset[..., 1]


def _move_offsets(cfg: EmulatorConfig, t_us: np.ndarray | int) -> np.ndarray:
    """Sum of the displacements of ``cfg.moves`` done by ``t_us``: ``(..., 2)`` (x, y) pixels."""
    t = np.asarray(t_us, dtype=np.float64)
    offset = np.zeros(t.shape + (2,))
    for start, end, dx, dy in cfg.moves:
        tau = np.clip((t - start) / (end - start), 0.0, 1.0)
        if cfg.move_profile == "minjerk":
            tau = tau**3 * (10.0 - 15.0 * tau + 6.0 * tau**2)
        offset += tau[..., None] * np.array([dx, dy])
    return offset


def _move_extent(cfg: EmulatorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest (x, y) offsets of the path over one recording (sampled every 0.1 ms)."""
    t = np.union1d(np.arange(0, cfg.duration_us + 1, 100), [v for m in cfg.moves for v in m[:2]])
    offsets = _move_offsets(cfg, t[t <= cfg.duration_us])
    return offsets.min(axis=0), offsets.max(axis=0)


def saccade_starts(cfg: EmulatorConfig) -> np.ndarray:
    """Start times (µs, int64, ascending) of the saccades that ``time_jitter_us`` delays one by one:
    the triangle's three sides, or the maximal intervals during which some move runs."""
    if not cfg.moves:
        return np.arange(3, dtype=np.int64) * cfg.saccade_us
    starts, end = [], -1
    for start, stop, _, _ in sorted(cfg.moves):
        if start > end:
            starts.append(start)
        end = max(end, stop)
    return np.array(starts, np.int64)


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(N, H, W)`` images to ``(N, size, size)`` by bilinear interpolation (half-pixel
    centres, like ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``)."""

    def matrix(n_in: int) -> np.ndarray:
        src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0.0, n_in - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w = src - i0
        m = np.zeros((size, n_in))
        np.add.at(m, (np.arange(size), i0), 1.0 - w)
        np.add.at(m, (np.arange(size), i1), w)
        return m

    images = np.asarray(images, dtype=np.float64)
    ry, rx = matrix(images.shape[-2]), matrix(images.shape[-1])
    return (ry @ images @ rx.T).astype(np.float32)


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0 or min(images.shape[1:]) < 1:
        raise DataError(f"emulate_batch needs images shaped (N, H, W) with N >= 1, got {images.shape}")
    if not np.issubdtype(images.dtype, np.floating) and not np.issubdtype(images.dtype, np.integer):
        raise DataError(f"emulate_batch needs numeric images, got dtype {images.dtype}")
    images = images.astype(np.float32)
    if not (np.all(images >= 0.0) and np.all(images <= 1.0)):
        raise DataError(
            f"emulate_batch needs pixel values in [0, 1]; got min {np.nanmin(images)}, max {np.nanmax(images)} (or NaN)"
        )
    return images


def _thresholds(cfg: EmulatorConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ON and OFF thresholds ``(canvas, canvas)`` float32 for this seed's sensor."""
    rng = np.random.default_rng([seed, 0])
    mean = np.array([cfg.threshold, cfg.threshold * cfg.threshold_off_ratio])[:, None, None]
    c = mean + cfg.threshold_sigma * rng.standard_normal((2, cfg.canvas_size, cfg.canvas_size))
    c = np.maximum(c, mean / 4).astype(np.float32)
    return c[0], c[1]


def _noise(cfg: EmulatorConfig, seed: int, index: int) -> np.ndarray:
    """Background noise events of image ``index`` (their own random stream per image)."""
    n_pix = cfg.canvas_size * cfg.canvas_size
    mean = cfg.noise_rate_hz * n_pix * cfg.duration_us * 1e-6
    if mean <= 0:
        return np.zeros(0, EVENT_DTYPE)
    rng = np.random.default_rng([seed, 1, index])
    n = int(rng.poisson(mean))
    ev = np.zeros(n, EVENT_DTYPE)
    ev["t"] = rng.integers(0, cfg.duration_us, n)
    ev["x"] = rng.integers(0, cfg.canvas_size, n)
    ev["y"] = rng.integers(0, cfg.canvas_size, n)
    if cfg.noise_on_fraction == 0.5:
        ev["p"] = rng.integers(0, 2, n)  # the version-1 draw
    else:
        ev["p"] = rng.random(n) < cfg.noise_on_fraction
    return ev


def _blur(digits: np.ndarray, sigma: float) -> tuple[np.ndarray, int]:
    """Gaussian blur of ``(N, s, s)`` digits, zero outside: ``(N, s + 2m, s + 2m)`` and the margin ``m``."""
    m = max(1, math.ceil(3 * sigma))
    size = digits.shape[-1] + 2 * m
    taps = np.exp(-0.5 * (np.arange(-m, m + 1) / sigma) ** 2)
    taps /= taps.sum()
    k = np.zeros((size, size))
    for d, w in zip(range(-m, m + 1), taps):
        k += w * np.eye(size, k=d)
    padded = np.pad(digits.astype(np.float64), ((0, 0), (m, m), (m, m)))
    return np.clip(k @ padded @ k.T, 0.0, 1.0).astype(np.float32), m


def _jitter(events: np.ndarray, cfg: EmulatorConfig, seed: int, index: int) -> np.ndarray:
    """Shift each saccade's events by its own random whole number of µs; drop those pushed out."""
    starts = saccade_starts(cfg)
    half = cfg.time_jitter_us // 2
    delay = np.random.default_rng([seed, 2, index]).integers(-half, half, len(starts), endpoint=True)
    saccade = np.maximum(np.searchsorted(starts, events["t"], side="right") - 1, 0)
    t = events["t"] + delay[saccade]
    keep = (t >= 0) & (t < cfg.duration_us)
    out = events[keep]
    out["t"] = t[keep]
    return out[np.argsort(out["t"], kind="stable")]


def emulate_batch(
    images: np.ndarray,
    cfg: EmulatorConfig | None = None,
    seed: int = 0,
    *,
    chunk: int = 128,
    ids: Sequence[int] | np.ndarray | None = None,
) -> list[np.ndarray]:
    """Emulate one recording per image of ``images`` ``(N, H, W)`` in [0, 1].

    Returns a list of ``N`` event arrays (:data:`EVENT_DTYPE`, sorted by ``t``). All images are
    seen by the same sensor (thresholds from ``seed``). Image ``i``'s events do not depend on the
    other images of the batch, except through its own noise and jitter streams, seeded by
    ``(seed, ids[i])``; ``ids`` (integers >= 0, default ``0..N-1``) lets the caller give each
    image the same streams whichever batch it is emulated in. The work is vectorised over images
    and pixels for each substep; ``chunk`` images are simulated together (small enough to stay in
    cache).
    """
    cfg = cfg if cfg is not None else EmulatorConfig()
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"emulator seed must be an integer >= 0, got {seed!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be an integer >= 1, got {chunk!r}")
    digits = resize_bilinear(_check_images(images), cfg.digit_size)
    ids = _check_ids(ids, len(digits))
    times = np.arange(cfg.duration_us // cfg.substep_us + 1, dtype=np.int64) * cfg.substep_us  # substep bounds, µs
    px, py = digit_position(cfg, times)
    if cfg.blur_px > 0:
        digits, margin = _blur(digits, cfg.blur_px)
        px, py = px - margin, py - margin
    c_on, c_off = _thresholds(cfg, seed)
    out: list[np.ndarray] = []
    for start in range(0, len(digits), chunk):
        out.extend(_emulate_chunk(digits[start : start + chunk], cfg, c_on, c_off, times, px, py))
    if cfg.time_jitter_us > 0:
        out = [_jitter(ev, cfg, seed, i) for ev, i in zip(out, ids)]
    if cfg.noise_rate_hz > 0:
        for k, (ev, i) in enumerate(zip(out, ids)):
            merged = np.concatenate([ev, _noise(cfg, seed, i)])
            out[k] = merged[np.argsort(merged["t"], kind="stable")]
    return out


def _check_ids(ids: Sequence[int] | np.ndarray | None, n: int) -> list[int]:
    if ids is None:
        return list(range(n))
    arr = np.asarray(ids)
    if arr.shape != (n,) or (n and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0)):
        raise ConfigError(f"emulate_batch ids must be {n} integers >= 0 (one per image), got shape {arr.shape}")
    return [int(i) for i in arr]


def emulate(image: np.ndarray, cfg: EmulatorConfig | None = None, seed: int = 0) -> np.ndarray:
    """Emulate one recording of ``image`` ``(H, W)`` in [0, 1]; see :func:`emulate_batch`."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise DataError(f"emulate needs one image shaped (H, W), got {image.shape}")
    return emulate_batch(image[None], cfg, seed)[0]


def _emulate_chunk(
    digits: np.ndarray,
    cfg: EmulatorConfig,
    c_on: np.ndarray,
    c_off: np.ndarray,
    times: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
) -> list[np.ndarray]:
    """Simulate the pixels of ``digits`` ``(B, s, s)`` (resized, blurred) over one recording, the
    top left corner at ``(px, py)`` at the substep boundaries ``times``."""
    n_img, s = digits.shape[0], digits.shape[-1]
    size = cfg.canvas_size
    dt = cfg.substep_us
    n_sub = len(times) - 1
    ix, iy = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    fx, fy = (px - ix).astype(np.float32), (py - iy).astype(np.float32)

    # Only the rows/columns the digit ever touches can change; the rest of the canvas stays black.
    r0, r1 = max(int(iy.min()), 0), min(int(iy.max()) + s + 1, size)
    q0, q1 = max(int(ix.min()), 0), min(int(ix.max()) + s + 1, size)
    h, w = r1 - r0, q1 - q0
    pad = int(max(iy.max() - iy.min(), ix.max() - ix.min())) + 2
    z = np.zeros((n_img, s + 2 * pad, s + 2 * pad), np.float32)
    z[:, pad : pad + s, pad : pad + s] = digits  # z[j + pad] = digit[j], zero outside
    dark = cfg.ink == "dark"

    def log_intensity(k: int) -> np.ndarray:
        # canvas[Y] = (1 - fy) digit[Y - iy] + fy digit[Y - iy - 1], the same along x
        ys, xs = r0 - iy[k] + pad, q0 - ix[k] + pad
        rows = z[:, ys - 1 : ys + h, :]
        mixed = (1 - fx[k]) * rows[:, :, xs : xs + w] + fx[k] * rows[:, :, xs - 1 : xs - 1 + w]
        img = (1 - fy[k]) * mixed[:, 1:] + fy[k] * mixed[:, :-1]
        if dark:
            img = np.float32(1.0 + cfg.log_eps) - img
        else:
            img += np.float32(cfg.log_eps)
        return np.log(img, out=img)

    con = c_on[r0:r1, q0:q1]
    coff = c_off[r0:r1, q0:q1]
    con_flat = np.broadcast_to(con, (n_img, h, w)).reshape(-1)
    coff_flat = np.broadcast_to(coff, (n_img, h, w)).reshape(-1)
    neg_coff = -coff
    level_prev = log_intensity(0)
    ref = level_prev.copy()  # adapted at t = 0
    last_event = np.full(ref.size, np.iinfo(np.int64).min // 2, np.int64) if cfg.refractory_us else None
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (flat pixel index, t, p)

    keep = np.float32(math.exp(-dt / cfg.pixel_tau_us)) if cfg.pixel_tau_us > 0 else None
    for k in range(1, n_sub + 1):
        level = log_intensity(k)
        if keep is not None:  # the photoreceptor's low-pass: level -> level_prev + (1 - keep) (level - level_prev)
            level -= level_prev
            level *= 1 - keep
            level += level_prev
        diff = level - ref
        fire = (diff >= con) | (diff <= neg_coff)
        idx = np.flatnonzero(fire)
        if idx.size:
            d = diff.reshape(-1)[idx]
            on = d > 0
            c = np.where(on, con_flat[idx], coff_flat[idx])
            n = np.floor(np.abs(d) / c).astype(np.int64)
            n = np.maximum(n, 1)  # rounding: d >= c was tested in float32 above
            sign = np.where(on, np.float32(1), np.float32(-1))
            ref_old = ref.reshape(-1)[idx]
            ref.reshape(-1)[idx] = ref_old + sign * n * c
            l_prev = level_prev.reshape(-1)[idx]
            slope = level.reshape(-1)[idx] - l_prev
            safe = np.where(slope == 0, np.float32(1), slope)
            t_prev = times[k - 1]
            for j in range(1, int(n.max()) + 1):
                sel = np.flatnonzero(n >= j)
                frac = (ref_old[sel] + sign[sel] * j * c[sel] - l_prev[sel]) / safe[sel]
                frac = np.where(slope[sel] == 0, np.float32(1), np.clip(frac, 0, 1))
                t = t_prev + np.minimum(np.floor(frac * dt).astype(np.int64), dt - 1)
                if last_event is not None:
                    ok = t >= last_event[idx[sel]] + cfg.refractory_us
                    sel, t = sel[ok], t[ok]
                    last_event[idx[sel]] = t
                parts.append((idx[sel], t, on[sel]))
        level_prev = level

    return _split_events(parts, n_img, h, w, r0, q0)


def _split_events(parts: list, n_img: int, h: int, w: int, r0: int, q0: int) -> list[np.ndarray]:
    """Turn (flat pixel index, t, p) pieces into one ``t``-sorted event array per image."""
    if not parts:
        return [np.zeros(0, EVENT_DTYPE) for _ in range(n_img)]
    flat = np.concatenate([p[0] for p in parts])
    t = np.concatenate([p[1] for p in parts])
    pol = np.concatenate([p[2] for p in parts])
    img, rem = np.divmod(flat, h * w)
    y, x = np.divmod(rem, w)
    order = np.argsort((img << 32) | t, kind="stable")  # by image, then time; ties keep pixel order
    events = np.empty(order.size, EVENT_DTYPE)
    events["t"] = t[order]
    events["x"] = x[order] + q0
    events["y"] = y[order] + r0
    events["p"] = pol[order]
    bounds = np.searchsorted(img[order], np.arange(n_img + 1))
    return [events[bounds[i] : bounds[i + 1]].copy() for i in range(n_img)]


NMNIST_CALIBRATED = EmulatorConfig(
    digit_size=28,  # MNIST's native size: N-MNIST showed each digit at about one sensor pixel per image pixel
    ink="dark",  # real recordings make OFF events on a moving stroke's leading edge
    blur_px=0.5,
    threshold=0.25,
    threshold_off_ratio=0.95,
    threshold_sigma=0.01,
    refractory_us=1_750,  # real pixels almost never fire twice within 1.7 ms
    pixel_tau_us=500.0,
    noise_rate_hz=0.4,
    noise_on_fraction=1.0,  # isolated events in the real recordings are all ON
    moves=(  # down, right then up, left; x drifts on between the first two saccades
        (2_000, 82_000, 0.25, 5.5),
        (37_000, 102_000, 1.6, 0.0),
        (92_000, 207_000, 3.7, 0.0),
        (112_000, 192_000, 0.0, -5.5),
        (214_000, 294_000, -5.3, 0.0),
    ),
    move_profile="minjerk",
    shift_x_px=0.25,
    shift_y_px=1.0,
    time_jitter_us=4_000,
)
"""The emulator calibrated against the real N-MNIST recordings of the shared folder (train split
pairs only): ``python -m bench.emulator_calibration --fit`` found these values, starting from
its ``FIT_START``; the bench's table compares them with the real statistics. The default of the
``nmnist_emulated`` dataset."""
