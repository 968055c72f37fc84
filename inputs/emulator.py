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
  uniform position, time and polarity) that do not disturb the pixel state.

Everything random comes from ``seed``; the same seed gives the same events, bit for bit. Output
events are :data:`inputs.events.EVENT_DTYPE`, sorted by ``t``, in ``[0, duration_us)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ConfigError, DataError
from inputs.events import EVENT_DTYPE, _from_dict


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

    def __post_init__(self) -> None:
        for name in ("canvas_size", "digit_size", "saccade_us", "substep_us"):
            _check_number(self, name, int, minimum=1)
        _check_number(self, "refractory_us", int, minimum=0)
        for name in ("saccade_amplitude_px", "threshold_sigma", "noise_rate_hz"):
            _check_number(self, name, float, minimum=0.0)
        for name in ("threshold", "log_eps"):
            _check_number(self, name, float, minimum=0.0, strict=True)
        if self.saccade_us % self.substep_us:
            raise ConfigError(
                f"EmulatorConfig.saccade_us ({self.saccade_us}) must be a multiple of substep_us ({self.substep_us})"
            )
        if self.digit_size + self.saccade_amplitude_px > self.canvas_size:
            raise ConfigError(
                f"EmulatorConfig: digit_size {self.digit_size} + saccade_amplitude_px {self.saccade_amplitude_px} "
                f"does not fit on the {self.canvas_size}-pixel canvas"
            )

    @property
    def duration_us(self) -> int:
        """Length of one recording (three saccades), µs."""
        return 3 * self.saccade_us

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; :meth:`from_dict` rebuilds the same config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmulatorConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        data = dict(data)
        for f in dataclasses.fields(cls):  # JSON may turn 4.0 into 4
            if f.type == "float" and isinstance(data.get(f.name), int) and not isinstance(data[f.name], bool):
                data[f.name] = float(data[f.name])
        return _from_dict(cls, data)


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
    a = cfg.saccade_amplitude_px
    vertices = np.array([[0.0, 0.0], [a / 2, a], [a, 0.0], [0.0, 0.0]])  # (x, y) offsets
    t = np.asarray(t_us, dtype=np.float64)
    seg = np.clip(t // cfg.saccade_us, 0, 2).astype(np.int64)
    frac = np.clip(t / cfg.saccade_us - seg, 0.0, 1.0)
    offset = vertices[seg] + (vertices[seg + 1] - vertices[seg]) * frac[..., None]
    base = (cfg.canvas_size - cfg.digit_size - a) / 2
    return base + offset[..., 0], base + offset[..., 1]


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
    c = cfg.threshold + cfg.threshold_sigma * rng.standard_normal((2, cfg.canvas_size, cfg.canvas_size))
    c = np.maximum(c, cfg.threshold / 4).astype(np.float32)
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
    ev["p"] = rng.integers(0, 2, n)
    return ev


def emulate_batch(
    images: np.ndarray, cfg: EmulatorConfig | None = None, seed: int = 0, *, chunk: int = 128
) -> list[np.ndarray]:
    """Emulate one recording per image of ``images`` ``(N, H, W)`` in [0, 1].

    Returns a list of ``N`` event arrays (:data:`EVENT_DTYPE`, sorted by ``t``). Image ``i``'s
    events do not depend on the other images of the batch, except through the noise stream,
    which is seeded by ``(seed, i)``. The work is vectorised over images and pixels for each
    substep; ``chunk`` images are simulated together (small enough to stay in cache).
    """
    cfg = cfg if cfg is not None else EmulatorConfig()
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"emulator seed must be an integer >= 0, got {seed!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be an integer >= 1, got {chunk!r}")
    digits = resize_bilinear(_check_images(images), cfg.digit_size)
    c_on, c_off = _thresholds(cfg, seed)
    out: list[np.ndarray] = []
    for start in range(0, len(digits), chunk):
        out.extend(_emulate_chunk(digits[start : start + chunk], cfg, c_on, c_off))
    if cfg.noise_rate_hz > 0:
        for i, ev in enumerate(out):
            merged = np.concatenate([ev, _noise(cfg, seed, i)])
            out[i] = merged[np.argsort(merged["t"], kind="stable")]
    return out


def emulate(image: np.ndarray, cfg: EmulatorConfig | None = None, seed: int = 0) -> np.ndarray:
    """Emulate one recording of ``image`` ``(H, W)`` in [0, 1]; see :func:`emulate_batch`."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise DataError(f"emulate needs one image shaped (H, W), got {image.shape}")
    return emulate_batch(image[None], cfg, seed)[0]


def _emulate_chunk(digits: np.ndarray, cfg: EmulatorConfig, c_on: np.ndarray, c_off: np.ndarray) -> list[np.ndarray]:
    """Simulate the pixels of ``digits`` ``(B, s, s)`` (already resized) over one recording."""
    n_img, s = digits.shape[0], cfg.digit_size
    size = cfg.canvas_size
    dt = cfg.substep_us
    n_sub = cfg.duration_us // dt
    times = np.arange(n_sub + 1, dtype=np.int64) * dt  # substep boundaries, µs
    px, py = digit_position(cfg, times)
    ix, iy = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    fx, fy = (px - ix).astype(np.float32), (py - iy).astype(np.float32)

    # Only the rows/columns the digit ever touches can change; the rest of the canvas stays black.
    r0, r1 = max(int(iy.min()), 0), min(int(iy.max()) + s + 1, size)
    q0, q1 = max(int(ix.min()), 0), min(int(ix.max()) + s + 1, size)
    h, w = r1 - r0, q1 - q0
    pad = int(max(iy.max() - iy.min(), ix.max() - ix.min())) + 2
    z = np.zeros((n_img, s + 2 * pad, s + 2 * pad), np.float32)
    z[:, pad : pad + s, pad : pad + s] = digits  # z[j + pad] = digit[j], zero outside

    def log_intensity(k: int) -> np.ndarray:
        # canvas[Y] = (1 - fy) digit[Y - iy] + fy digit[Y - iy - 1], the same along x
        ys, xs = r0 - iy[k] + pad, q0 - ix[k] + pad
        rows = z[:, ys - 1 : ys + h, :]
        mixed = (1 - fx[k]) * rows[:, :, xs : xs + w] + fx[k] * rows[:, :, xs - 1 : xs - 1 + w]
        img = (1 - fy[k]) * mixed[:, 1:] + fy[k] * mixed[:, :-1]
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

    for k in range(1, n_sub + 1):
        level = log_intensity(k)
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
