"""eventsim against the other SNN libraries, each running the same graph on the same inputs.

For each workload (the N-MNIST CSNN on real recordings, binned as trained and in 1 ms steps; the
digits student), the float graph is written for each library by :func:`convert.peers.graph_for`
and loaded with that library's own NIR import; then eventsim, the torch target and every library
run the same input spikes at batch 1 on one thread, in this process. Two timings, both reported
(they differ by cache eviction: eventsim loses most when interleaved):

- *interleaved*: sample by sample, every runner in turn (one sample each), median over ``--repeats``;
- *back to back*: each runner over all samples in a row, median over ``--repeats``.

Beside each time: the fraction of samples whose output counts equal our reference's, so that a
fast wrong answer shows. SpikingJelly pins packages that conflict with the project's torch: it runs
in its own scratch environment (``--envs``; made as ``tests/data/foreign/README.md`` says), where
:mod:`bench.peer_env` times eventsim again beside it, and its rows say so. Sinabs and Rockpool
cannot compute our graphs (:data:`convert.peers.REFUSED`), and a library that is not installed is
skipped; the reason is printed either way.

    python -m bench.peers
    python -m bench.peers --samples 16 --repeats 3 --envs /tmp/peers

Writes ``peers.json`` and ``peers.md`` under ``--out`` (the load average is recorded beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from bench import at_least, machine
from bench.eventsim import GOALS, NMNIST, workloads
from bench.peer_env import load_peer, time_runners
from convert.build import build_nir
from convert.nirgraph import write_graph
from convert.peers import REFUSED, graph_for
from core.fileio import save_figure, write_json_atomic, write_text_atomic
from targets import eventsim, torch_target
from targets import reference as ref
from targets.plan import load_plan

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("snntorch", "norse", "spikingjelly", "sinabs", "rockpool")
OWN_ENV = {
    "spikingjelly": "SpikingJelly 2.0.0 pins torchaudio/tensorboard versions that conflict with the project's torch"
}
ENV_TIMEOUT_S = 3600  # one workload in a library's own environment


def _peer(library: str, graph, dt: float, folder: Path):
    """``x -> counts`` by ``library``'s own import of our graph in this process, or why it is skipped."""
    import nir

    if library in REFUSED:
        return None, REFUSED[library]
    path = folder / f"graph.{library}.nir"
    nir.write(path, graph_for(graph, library, dt=dt))
    try:
        return load_peer(library, path, dt), None
    except ImportError as e:
        return None, f"not installed here ({e.name})"


def _in_own_env(library: str, graph, dt: float, samples: list[np.ndarray], args, folder: Path):
    """``library`` and eventsim timed in the library's own environment (:mod:`bench.peer_env`):
    its result, or why it is skipped."""
    import nir

    python = Path(args.envs) / library / "bin" / "python"
    if not python.is_file():
        return None, f"{OWN_ENV[library]}; no environment of its own at {python} (tests/data/foreign/README.md)"
    mine, theirs, inputs, out = (
        folder / f"graph{s}" for s in (".nir", f".{library}.nir", ".inputs.npy", f".{library}.json")
    )
    write_graph(mine, graph)
    nir.write(theirs, graph_for(graph, library, dt=dt))
    np.save(inputs, np.concatenate(samples, axis=1))
    cmd = [str(python), "-m", "bench.peer_env", "--library", library, "--graph", str(mine), "--peer-graph", str(theirs),
           "--inputs", str(inputs), "--dt", repr(dt), "--repeats", str(args.repeats), "--out", str(out)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=ENV_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"its run in {python} took over {ENV_TIMEOUT_S} s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
        return None, f"its run in {python} failed (exit {done.returncode}): {last}"
    return json.loads(out.read_text()), None


def measure(w: dict, args, folder: Path) -> dict:
    x = w["x"]
    graph, _ = build_nir(w["model"], w["shape"], precision="float", steps=x.shape[0])
    plan = load_plan(graph)
    dt = float(plan.meta["dt"])
    runners = {"eventsim": lambda xs: eventsim.run(plan, xs).counts,
               "torch target": lambda xs: torch_target.run(plan, xs, device="cpu").counts}  # fmt: skip
    skipped, own_env = {}, []
    for lib in LIBRARIES:
        if lib in OWN_ENV:
            own_env.append(lib)
            continue
        run, why = _peer(lib, graph, dt, folder)
        if run is None:
            skipped[lib] = why
        else:
            runners[lib] = run
    n = x.shape[1]
    samples = [np.ascontiguousarray(x[:, i : i + 1]) for i in range(n)]
    want = ref.run(plan, x).counts
    agree = {}
    for name, run in runners.items():  # (also the warm-up: compilation, first calls)
        got = np.concatenate([run(s) for s in samples])
        agree[name] = float((got == want).all(axis=1).mean())
    inter, b2b = time_runners(runners, samples, args.repeats)
    rows = _rows(inter, b2b, agree)
    for lib in own_env:  # after this process's timing: the other environment's process runs alone
        theirs, why = _in_own_env(lib, graph, dt, samples, args, folder)
        if theirs is None:
            skipped[lib] = why
            continue
        t = theirs["runners"]
        agree = {k: float((np.asarray(v["counts"]) == want).all(axis=1).mean()) for k, v in t.items()}
        there = f" ({lib}'s environment)"
        rows |= {name + there: row for name, row in _rows(*_seconds(t), agree).items()}
    return {"workload": w["name"], "weights": w["weights"], "samples": n, "steps": int(x.shape[0]), "runners": rows,
            "skipped": skipped}  # fmt: skip


def _seconds(runners: dict) -> tuple[dict, dict]:
    """A :mod:`bench.peer_env` result's times as :func:`time_runners` returns them."""
    return ({k: v["interleaved_s"] for k, v in runners.items()}, {k: v["back_to_back_s"] for k, v in runners.items()})


def _rows(inter: dict, b2b: dict, agree: dict) -> dict:
    """Per runner: medians in ms, ratios to eventsim's (timed in the same process) and agreement."""
    es_i, es_b = statistics.median(inter["eventsim"]), statistics.median(b2b["eventsim"])
    return {name: {"interleaved_ms": 1e3 * statistics.median(inter[name]), "back_to_back_ms": 1e3 * statistics.median(b2b[name]),
                   "ratio_interleaved": statistics.median(inter[name]) / es_i,
                   "ratio_back_to_back": statistics.median(b2b[name]) / es_b,
                   "identical_output_counts": agree[name]} for name in inter}  # fmt: skip


def table(results: list[dict]) -> str:
    lines = ["| workload | runner | ms/sample interleaved | x eventsim | ms/sample back to back | x eventsim | identical counts "
             "| load avg before |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        load = r.get("load_average_before")
        for name, v in r["runners"].items():
            lines.append(f"| {r['workload']} | {name} | {v['interleaved_ms']:.2f} | {v['ratio_interleaved']:.1f}x | "
                         f"{v['back_to_back_ms']:.2f} | {v['ratio_back_to_back']:.1f}x | "
                         f"{100 * v['identical_output_counts']:.0f}% | {'-' if load is None else f'{load:.2f}'} |")  # fmt: skip
    skipped = {k: v for r in results for k, v in r["skipped"].items()}
    lines += [""] + [f"- {k}: skipped, {v}" for k, v in skipped.items()]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    """Each runner's time over eventsim's (timed in the same process), per workload: interleaved
    (solid) and back to back (hatched), on a log scale with the 10x goal; a runner whose counts
    differ from the reference's is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = list(dict.fromkeys(n for r in results for n in r["runners"] if not n.startswith("eventsim")))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(results) * max(1, len(peers)) ** 0.5), 5))
    width = 0.8 / max(1, len(peers))
    for j, name in enumerate(peers):
        x = [i + (j - (len(peers) - 1) / 2) * width for i, r in enumerate(results) if name in r["runners"]]
        rows = [r["runners"][name] for r in results if name in r["runners"]]
        bars = ax.bar(x, [v["ratio_interleaved"] for v in rows], width * 0.48, align="edge", label=name)
        ax.bar([p - width * 0.48 for p in x], [v["ratio_back_to_back"] for v in rows], width * 0.48, align="edge",
               color=bars.patches[0].get_facecolor(), alpha=0.45, hatch="//")  # fmt: skip
        for p, v in zip(x, rows, strict=True):
            if v["identical_output_counts"] < 1:
                ax.annotate("counts differ", (p, v["ratio_interleaved"]), fontsize=6, rotation=90, color="red")
    goal = GOALS["torch_batch1"]  # (the same 10x against every peer)
    ax.axhline(goal, color="k", ls="--", lw=1, label=f"goal ({goal:.0f}x)")
    ax.set_xticks(range(len(results)), [textwrap.fill(r["workload"], 24) for r in results], fontsize=7)
    ax.set(ylabel="runner's time / eventsim's (batch 1, one thread)", yscale="log",
           title="eventsim against the other libraries (solid: interleaved, hatched: back to back)")  # fmt: skip
    ax.legend(fontsize=7), ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=at_least(1), default=16)
    ap.add_argument("--repeats", type=at_least(1), default=3)
    ap.add_argument("--nmnist", default="runs/nmnist_student/student.pt")
    ap.add_argument("--digits", default="runs/demo/student.pt")
    ap.add_argument("--event-digits", default="runs/demo/nmnist/student.pt")
    ap.add_argument("--out", default="runs/bench/peers")
    ap.add_argument("--envs", default="/tmp/peers", help="scratch environments, ENVS/<library>/bin/python, for "
                    "the libraries whose pins conflict with the project's (tests/data/foreign/README.md)")  # fmt: skip
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    (out / "graphs").mkdir(parents=True, exist_ok=True)
    if not NMNIST.is_dir():
        print(f"note: {NMNIST} not found: only the digits workloads run", file=sys.stderr)
    results = []
    for w in workloads(args):
        if w["key"] == "nmnist_1ms_nobias":
            continue
        load = os.getloadavg()[0]
        r = measure(w, args, out / "graphs") | {"load_average_before": load}
        results.append(r)
        print(table([r]), flush=True)
    cpu = machine.describe()
    write_json_atomic(out / "peers.json", {"results": results, "threads": 1, "batch": 1, "machine": cpu})
    write_text_atomic(out / "peers.md", f"Machine: {machine.line(cpu)}\n\n" + table(results))
    plot(results, out / "peers.png")
    print(f"results: {out / 'peers.json'}, {out / 'peers.md'}, plot: {out / 'peers.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
