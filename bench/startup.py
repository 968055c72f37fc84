"""Start-up of ``python -m runtime.stream`` on a real recording: process start to the first window's
output, in stages, with numba's cache empty (cold), filled by ``python -m runtime.warm`` (the first
run after ``make setup``) and filled by earlier runs (warm).

Every run is a fresh process, ``python -m runtime.stream FILE --model MODEL --target eventsim``
with the windows on stdout, exactly as a user starts it. Its summary gives the stages (see
``runtime.stream``): imports (process start to ``runtime.stream`` imported), graph load, the
target's preparation (its module imported: numba), the first call (numba's machine code loaded
from its cache, or compiled), the first window (events read, binned and run) and the steady
state (median time per window after the first). The process start comes from the kernel
(``/proc/self/stat``); this script also times the first JSON line from outside, from just before
it starts the process. Numba's cache is a temporary ``NUMBA_CACHE_DIR`` per scenario, so the
project's own cache (``targets/eventsim/__pycache__``) is neither used nor touched:

- ``cold``: an empty cache: the first run after installation without ``make setup``'s warm-up;
- ``warm, numba's JIT``: the cache the cold run left (numba's machine code, no module compiled ahead
  of time), ``--repeats`` runs (median and each);
- ``after runtime.warm``: an empty cache that ``python -m runtime.warm`` filled (its time is
  reported; it also compiles the kernels ahead of time, :mod:`targets.eventsim.aot`): the first run
  after ``make setup``;
- ``warm``: that cache again, ``--repeats`` runs: every later run after ``make setup``;
- ``warm, torch imported first``: the last cache, with torch imported before ``runtime.stream``
  (how it started before this benchmark's issue).

Each row says which code ran the kernels (the stream summary's ``startup.kernels``).

The 1-minute load average is printed beside every figure: this machine may be shared.

    python -m bench.startup
    python -m bench.startup --recording aedat2/dvs128_walking.aedat --repeats 5 --no-setup

Goal (the issue): at most 1 s warm and 3 s on the first run after installation. The model is the
demo's event model (``runs/demo/nmnist/model.fixed.nir``) when present, else an untrained event
CSNN of the same shape. Writes ``startup.json`` under ``--out`` and ``startup.md`` (the table)
under ``--results``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import at_least
from core.fileio import write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
EVENTDATA = ROOT.parent / "shared" / "eventdata"
DEMO_MODEL = ROOT / "runs" / "demo" / "nmnist" / "model.fixed.nir"
GOALS = {"warm": 1.0, "after runtime.warm": 3.0}  # seconds from process start to the first window's output
TORCH_FIRST = "warm, torch imported first"
JIT_WARM = "warm, numba's JIT"  # the cache filled by the cold run: numba loads its machine code
STAGES = ("process_to_imports_s", "graph_s", "target_s", "first_call_s", "first_window_s")
SENSOR_SIZES = {".bin": ["--sensor-size", "128x128"], ".dat": ["--sensor-size", "120x100"]}  # files that state none


def model_path(out: Path) -> tuple[Path, str]:
    if DEMO_MODEL.is_file():
        return DEMO_MODEL, f"the demo's event model ({DEMO_MODEL.relative_to(ROOT)}, fixed precision)"
    from bench.stream import untrained_event_model

    path = untrained_event_model(out, 8)
    return path, "an untrained event CSNN (no runs/demo/nmnist/model.fixed.nir: make demo trains one)"


# the baseline: runtime.stream as it started before this benchmark's issue, torch imported first
WITH_TORCH = (
    "import torch, runpy, sys; sys.argv[0] = 'runtime.stream'; runpy.run_module('runtime.stream', run_name='__main__')"
)


def stream_process(argv: list[str], cache: Path, torch_first: bool = False) -> dict[str, Any]:
    """One ``python -m runtime.stream`` process: its summary's start-up stages, the first JSON line
    as seen from here, the whole process's wall time and the load average before it."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    load = os.getloadavg()[0]
    command = ["-c", WITH_TORCH] if torch_first else ["-m", "runtime.stream"]
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *command, *argv], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=err)  # fmt: skip
        first = proc.stdout.readline()
        seen = time.perf_counter() - t0
        rest = proc.stdout.read()
        proc.wait()
        wall = time.perf_counter() - t0
        err.seek(0)
        if proc.returncode != 0 or not first:
            raise SystemExit(f"runtime.stream {' '.join(argv)} failed ({proc.returncode}): {err.read()[-2000:]}")
    summary = json.loads(rest.strip().splitlines()[-1])["summary"]
    return {**summary["startup"], "first_output_seen_s": seen, "process_s": wall, "load_1min": load,
            "windows": summary["windows"], "latency_p50_ms": summary["latency_ms"]["p50"]}  # fmt: skip


def warm_process(cache: Path) -> dict[str, Any]:
    """``python -m runtime.warm`` into ``cache``: its wall time and what it printed."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "runtime.warm"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "NUMBA_CACHE_DIR": str(cache)})  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"runtime.warm failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {"wall_s": time.perf_counter() - t0, "load_1min": load, "printed": proc.stdout.strip()}


def repeated(name: str, argv: list[str], cache: Path, repeats: int) -> list[dict[str, Any]]:
    """``repeats`` stream processes on ``cache``, each announced with the load average."""
    runs = []
    for i in range(repeats):
        print(f"{name} {i + 1}/{repeats} (load {os.getloadavg()[0]:.2f}) ...", file=sys.stderr, flush=True)
        runs.append(stream_process(argv, cache))
    return runs


def run(args) -> dict[str, Any]:
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    model, weights = model_path(out)
    recording = EVENTDATA / args.recording
    argv = [str(recording), "--model", str(model), "--target", args.target, "--progress", "false",
            *SENSOR_SIZES.get(recording.suffix, [])]  # fmt: skip
    res: dict[str, Any] = {"recording": args.recording, "model": str(model), "weights": weights, "target": args.target,
                           "cores": len(os.sched_getaffinity(0)), "goals_s": GOALS, "runs": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="snn-startup-") as tmp:
        cache = Path(tmp) / "cold"
        print(f"cold (load {os.getloadavg()[0]:.2f}) ...", file=sys.stderr, flush=True)
        res["runs"]["cold"] = [stream_process(argv, cache)]
        # numba's cache as the cold run left it: no module compiled ahead of time
        res["runs"][JIT_WARM] = repeated(JIT_WARM, argv, cache, args.repeats)
        if args.setup:
            cache = Path(tmp) / "setup"
            print(f"python -m runtime.warm (load {os.getloadavg()[0]:.2f}) ...", file=sys.stderr, flush=True)
            res["setup_warm"] = warm_process(cache)
            res["runs"]["after runtime.warm"] = [stream_process(argv, cache)]
            res["runs"]["warm"] = repeated("warm", argv, cache, args.repeats)
        print(f"{TORCH_FIRST} (load {os.getloadavg()[0]:.2f}) ...", file=sys.stderr, flush=True)
        res["runs"][TORCH_FIRST] = [stream_process(argv, cache, torch_first=True)]
    return res


def _median(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def table(res: dict[str, Any]) -> str:
    head = ["run", "load (1 min)", "imports s", "graph s", "target s", "first call s", "first window ms",
            "first output s (process start)", "first output s (seen outside)", "steady ms/window", "process s",
            "kernels"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [(name, [r]) for name in ("cold", "after runtime.warm") for r in res["runs"].get(name, [])]
    for name in (JIT_WARM, "warm"):
        runs = res["runs"].get(name, [])
        rows += [(f"{name} #{i + 1}", [r]) for i, r in enumerate(runs)]
        rows += [(f"{name}, median of {len(runs)}", runs)] if runs else []
    rows += [(TORCH_FIRST, res["runs"][TORCH_FIRST])]
    for name, runs in rows:
        cells = [name, _f(_median(runs, "load_1min"))]
        cells += [_f(_median(runs, k)) for k in STAGES[:-1]] + [_f(1e3 * _median(runs, "first_window_s"), "{:.1f}")]
        cells += [_f(_median(runs, "process_to_first_output_s")), _f(_median(runs, "first_output_seen_s"))]
        cells += [_f(_median(runs, "steady_window_ms")), _f(_median(runs, "process_s"))]
        cells.append("ahead of time" if str(runs[0].get("kernels")).startswith("compiled ahead") else "numba's JIT")
        lines.append("| " + " | ".join(cells) + " |")
    best = "warm" if res["runs"].get("warm") else JIT_WARM
    cold, jit_s, warm_s, torch_s = (
        _median(res["runs"][k], "process_to_first_output_s") for k in ("cold", JIT_WARM, best, TORCH_FIRST)
    )
    notes = [f"\n`runtime.stream {res['recording']} --target {res['target']}`, {res['weights']}, "
             f"{res['runs']['cold'][0]['windows']} windows, {res['cores']} cores. First output, {best}: "
             f"{cold / warm_s:.1f}x sooner than cold, {torch_s / warm_s:.2f}x sooner than with torch imported (as "
             f"before: `{TORCH_FIRST}`), {jit_s / warm_s:.2f}x sooner than with numba's JIT loading its cache."]  # fmt: skip
    if "setup_warm" in res:
        s = res["setup_warm"]
        notes.append(f"`python -m runtime.warm` (what `make setup` runs) took {s['wall_s']:.1f} s "
                     f"(load {s['load_1min']:.2f}): {s['printed']}")  # fmt: skip
    for name, goal in res["goals_s"].items():
        got = _median(res["runs"].get(name, []), "process_to_first_output_s")
        if got is not None:
            notes.append(f"Goal for {name}: first output within {goal:.0f} s of the process start: "
                         f"{got:.2f} s, {'met' if got <= goal else 'missed'}.")  # fmt: skip
    return "\n".join(lines) + "\n" + "\n\n".join(notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.splitlines()[0])
    ap.add_argument("--recording", default="aedat2/dvs128_walking.aedat",
                    help="recording under ../shared/eventdata (default: %(default)s)")  # fmt: skip
    ap.add_argument("--target", default="eventsim", help="target streamed on (default: %(default)s)")
    ap.add_argument("--repeats", type=at_least(1), default=5, help="warm runs (default: %(default)s)")
    ap.add_argument("--no-setup", dest="setup", action="store_false",
                    help="skip python -m runtime.warm (about 5 minutes) and the runs after it")  # fmt: skip
    ap.add_argument("--out", default="runs/bench/startup", help="folder of startup.json (default: %(default)s)")
    ap.add_argument("--results", default="bench/results/startup", help="folder of startup.md (default: %(default)s)")
    args = ap.parse_args(argv)
    if not (EVENTDATA / args.recording).is_file():
        print(f"skipped: no recording {args.recording} under {EVENTDATA} (real recordings; see its README)",
              file=sys.stderr)  # fmt: skip
        return 0
    res = run(args)
    md = table(res)
    write_json_atomic(ROOT / args.out / "startup.json", res)
    write_text_atomic(ROOT / args.results / "startup.md", md)
    print(md)
    print(f"written: {Path(args.out) / 'startup.json'}, {Path(args.results) / 'startup.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
