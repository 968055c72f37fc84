"""Speed of the event-driven simulator (``eventsim``) against the ``torch`` CPU target (and ``lava``).

Workloads: the N-MNIST CSNN fed with real N-MNIST recordings from ``../shared/eventdata`` (binned
as the model was trained, and in 1 ms steps), the digits student and the emulated-event-digits
student. Trained checkpoints are used where they exist (``--nmnist``, ``--digits``,
``--event-digits``); otherwise the untrained model (He initialisation) is used and the report
says so. Everything is timed in this one process, interleaved, on one core (torch with one
thread), median of ``--repeats``:

- time per sample at batch 1 and batch 64, eventsim vs torch, both precisions; vs lava (Lava's own
  stepping time per sample, T + depth steps, without the worker's start-up and compilation);
- synaptic events (effective accumulates) per second and nanoseconds per synaptic event;
- time against input event rate (the events thinned to 10/25/50/100%), at batch 1 and batch 64;
- peak memory of the simulator's buffers (tracemalloc) next to the process's peak RSS;
- batches of 64 over two threads against one, beside two whole batches run side by side (one per
  thread: the most two threads give on this machine for the workload).

    python -m bench.eventsim
    python -m bench.eventsim --samples 16 --repeats 3
    python -m bench.eventsim --threads-only --samples 128 --repeats 9

Writes ``eventsim.json``, ``eventsim.md`` and ``eventsim.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import sys
import textwrap
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench import at_least, machine
from convert.build import build_nir
from convert.nirgraph import write_graph
from core.errors import ConfigError, SnnDeployError
from core.fileio import save_figure, write_json_atomic, write_text_atomic
from inputs.datasets import dataset_from_description, load_dataset, spike_batch
from targets import TARGETS, eventsim, torch_target
from targets.plan import load_plan
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.models import build_model

ROOT = Path(__file__).resolve().parents[1]
NMNIST = ROOT.parent / "shared" / "eventdata" / "nmnist" / "train"
GOALS = {"torch_batch1": 10.0, "lava": 100.0, "events_per_s": 5e8}


def _model(ckpt: Path | None, name: str):
    """A trained student, or the untrained model (readout scaled up so that it spikes)."""
    if ckpt is not None and ckpt.is_file():
        c = load_checkpoint(ckpt, kind="student")
        return model_from_checkpoint(c).eval(), c["dataset"], f"trained ({ckpt})"
    torch.manual_seed(0)
    model = build_model(name)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(8)
    return model.eval(), None, "untrained (He initialisation, readout x8): no checkpoint found"


def workloads(args) -> list[dict]:
    """``[{name, weights, inputs (T, N, ...), model, shape}]``; N-MNIST only where the recordings are."""
    out = []
    if NMNIST.is_dir():
        model, desc, weights = _model(Path(args.nmnist), "nmnist_csnn")
        binning = (desc or {}).get("binning", {})
        steps = int(binning.get("steps", 8))
        ds = load_dataset("nmnist", "train", root=str(NMNIST), steps=steps, binary=binning.get("binary", True))
        x, _ = spike_batch(ds, range(args.samples))
        out.append(dict(key="nmnist", name=f"N-MNIST CSNN, real recordings, T={steps} (as trained)", model=model, x=x,
                        weights=weights, shape=(2, 34, 34)))  # fmt: skip
        fine = load_dataset("nmnist", "train", root=str(NMNIST), steps=300, binary=False)
        xf, _ = spike_batch(fine, range(args.samples))
        out.append(dict(key="nmnist_1ms", name="N-MNIST CSNN, real recordings, 1 ms steps (T=300)", model=model, x=xf,
                        weights=weights, shape=(2, 34, 34)))  # fmt: skip
        # Biases drive every neuron at every step (as on Loihi); without them the cost follows the events
        unbiased = copy.deepcopy(model)
        with torch.no_grad():
            for m in unbiased.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
                    m.bias.zero_()
        out.append(dict(key="nmnist_1ms_nobias", name="same, biases removed, 1 ms steps (T=300)", model=unbiased,
                        x=xf, weights=weights + ", biases set to 0", shape=(2, 34, 34)))  # fmt: skip
    else:
        print(f"note: {NMNIST} not found; the N-MNIST workloads are skipped", file=sys.stderr)
    for label, ckpt, name in (
        ("digits", args.digits, "digits_csnn"),
        ("event_digits", args.event_digits, "nmnist_csnn"),
    ):
        model, desc, weights = _model(Path(ckpt), name)
        if desc is None:
            ds = load_dataset(label, "test")
        else:
            ds = dataset_from_description(desc, "test")
        x, _ = spike_batch(ds, range(min(args.samples, len(ds))))
        out.append(dict(key=label, name=f"{label} student, T={x.shape[0]}", model=model, x=x, weights=weights,
                        shape=tuple(ds.input_shape)))  # fmt: skip
    return out


def _median_times(fns, repeats: int) -> list[float]:
    """Median time of each of ``fns``, run interleaved (one of each per repeat), so that a slow
    stretch of this shared machine slows them all alike and their ratios hold."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


BATCH = 64  # the batch of the threads' ratio and of the thinned inputs' batch timing


def _per_sample(run, plan, x: np.ndarray, batch: int) -> None:
    for start in range(0, x.shape[1], batch):
        run(plan, x[:, start : start + batch])


def threads_ratio(plan, x: np.ndarray, repeats: int, threads: int = 2) -> dict:
    """Batches of 64 on one thread against the same batches split over ``threads`` threads (results
    checked identical), interleaved, median of ``repeats``; fewer than two batches' samples are
    repeated up to two whole batches. Beside them, ``side_by_side``: the same batches run whole, the
    threads each taking their own at once (nothing split, nothing joined), which is what the
    threads give on this machine for this workload (shared caches and memory, a core slowed by other
    work) and so the most a split can reach."""
    if x.shape[1] < 2 * BATCH:
        x = np.concatenate([x] * -(-2 * BATCH // x.shape[1]), axis=1)[:, : 2 * BATCH]
    one = lambda: _per_sample(lambda p, xb: eventsim.run(p, xb), plan, x, BATCH)  # noqa: E731
    many = lambda: _per_sample(lambda p, xb: eventsim.run(p, xb, threads=threads), plan, x, BATCH)  # noqa: E731
    twins = eventsim.prepare(plan).twins(threads)
    batches = [x[:, s : s + BATCH] for s in range(0, x.shape[1], BATCH)]

    def share(k: int) -> None:
        for xb in batches[k::threads]:
            twins[k].run(xb)

    a, b = eventsim.run(plan, x[:, :BATCH], record=True), eventsim.run(plan, x[:, :BATCH], record=True, threads=threads)
    same = np.array_equal(a.counts, b.counts) and all(np.array_equal(a.rasters[k], b.rasters[k]) for k in a.rasters)
    with ThreadPoolExecutor(threads - 1) as pool:

        def side() -> None:
            pending = [pool.submit(share, k) for k in range(1, threads)]
            share(0)
            for f in pending:
                f.result()

        t1, tn, ts = _median_times([one, many, side], repeats)
    return {"threads": threads, "ms_per_sample_1": 1e3 * t1 / x.shape[1], "ms_per_sample_n": 1e3 * tn / x.shape[1],
            "speedup": t1 / tn, "side_by_side": t1 / ts, "identical": bool(same), "samples": int(x.shape[1])}  # fmt: skip


def threads_table(args) -> int:
    """``--threads-only``: :func:`threads_ratio` per workload and precision, with the load before each."""
    rows = ["| workload | precision | 1 thread ms/sample | 2 threads ms/sample | speed-up | whole batches side by side "
            "(the machine's limit) | identical | load avg before |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for w in workloads(args):
        for precision in ("fixed", "float"):
            plan = _plan(w, precision, args)
            load = os.getloadavg()[0]
            r = threads_ratio(plan, w["x"], args.repeats)  # (its check of the results warms both up)
            rows.append(f"| {w['name']} | {precision} | {r['ms_per_sample_1']:.3f} | {r['ms_per_sample_n']:.3f} | "
                        f"{r['speedup']:.2f}x | {r['side_by_side']:.2f}x | {r['identical']} | {load:.2f} |")  # fmt: skip
            print(rows[-1], flush=True)
    write_text_atomic(Path(args.out) / "threads.md", "\n".join(rows) + "\n")
    print("\n".join(rows))
    return 0


def _plan(w: dict, precision: str, args):
    """The workload's model as a graph of ``precision`` (written: the lava target runs files), loaded."""
    graph, _ = build_nir(w["model"], w["shape"], precision=precision, steps=w["x"].shape[0], calibration=w["x"])
    path = Path(args.out) / "graphs" / f"{w['key']}.{precision}.nir"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_graph(path, graph)
    return load_plan(path)


def measure(w: dict, precision: str, args) -> dict:
    x = w["x"]
    plan = _plan(w, precision, args)
    n = x.shape[1]
    es = eventsim.run
    tr = lambda p, xb: torch_target.run(p, xb, device="cpu")  # noqa: E731
    es(plan, x[:, :2]), tr(plan, x[:, :2])  # compile / warm up
    rec: dict = {"precision": precision, "samples": n, "steps": int(x.shape[0]),
                 "input_events_per_sample": float(x.sum() / n), "load_1min_before": os.getloadavg()[0]}  # fmt: skip
    for batch in (1, 64):
        t_es, t_tr = (t / n for t in _median_times([lambda b=batch: _per_sample(es, plan, x, b),
                                                     lambda b=batch: _per_sample(tr, plan, x, b)], args.repeats))  # fmt: skip
        rec[f"batch{batch}"] = {"eventsim_ms": 1e3 * t_es, "torch_ms": 1e3 * t_tr, "speedup": t_tr / t_es}
    rec["batch64_threads"] = threads_ratio(plan, x, args.repeats)
    result = es(plan, x)
    syn = sum(s["synaptic_events"] for s in result.stats.values() if "synaptic_events" in s) / n
    upd = sum(s["neuron_updates"] for s in result.stats.values() if "neuron_updates" in s) / n
    t1 = rec["batch1"]["eventsim_ms"] / 1e3
    rec |= {"synaptic_events_per_sample": syn, "neuron_updates_per_sample": upd,
            "synaptic_events_per_s": syn / t1, "ns_per_synaptic_event": 1e9 * t1 / max(syn, 1)}  # fmt: skip
    if "lava" in TARGETS and not args.no_lava:
        k = min(args.lava_samples, n)
        try:
            from bench.lava import seconds_per_sample
            from targets import lava_target

            sim = lava_target.run(plan, x[:, :k]).stats["lava"]  # Lava's stepping: start-up excluded
            t_lava = seconds_per_sample(plan, sim, x.shape[0])
            rec["lava"] = {"lava_ms": 1e3 * t_lava, "samples": k, "steps_per_s": sim["steps"] / sim["seconds"],
                           "speedup": t_lava / t1}  # fmt: skip
        except SnnDeployError as e:
            rec["lava"] = {"unavailable": str(e)}
    # time against input event rate: each input count thinned binomially
    rng = np.random.default_rng(0)
    xi = x.astype(np.int64)
    fractions = (0.1, 0.25, 0.5, 1.0)
    thinned = [(rng.binomial(xi, f) if f < 1 else xi).astype(np.float32) for f in fractions]
    # at batch 1 (each call's fixed cost, ~15 us of Python, input scan and set-up, included) and at
    # batch 64 (that cost shared by 64 samples: what the network's own work does with the events)
    times = _median_times([lambda xt=xt, b=b: _per_sample(es, plan, xt, b) for b in (1, BATCH) for xt in thinned],
                          args.repeats)  # fmt: skip
    k = len(fractions)
    rec["thinning"] = [{"fraction": f, "input_events": float(xt.sum() / n), "eventsim_ms": 1e3 * t / n,
                        "eventsim_ms_batch64": 1e3 * t64 / n}
                       for f, xt, t, t64 in zip(fractions, thinned, times[:k], times[k:], strict=True)]  # fmt: skip
    tracemalloc.start()
    es(plan, x[:, :64])
    rec["eventsim_peak_mib_batch64"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rec["input_mib_batch64"] = x[:, :64].nbytes / 2**20
    return rec


def table(results: dict) -> str:
    lines = ["| workload | precision | eventsim ms/sample (b=1) | torch ms/sample (b=1) | speedup b=1 | "
             "speedup b=64 | 2 threads b=64 (whole batches side by side) | 10% events / 100% (b=1, b=64) | vs lava | synaptic events/sample | "
             "M syn. events/s | ns/syn. event | load avg before |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for w in results["workloads"]:
        for r in w["runs"]:
            lava = r.get("lava", {})
            lv = f"{lava['speedup']:.0f}x" if "speedup" in lava else "n/a"
            few, full = r["thinning"][0], r["thinning"][-1]
            thin = few["eventsim_ms"] / full["eventsim_ms"]
            thin64 = few["eventsim_ms_batch64"] / full["eventsim_ms_batch64"]
            lines.append(
                f"| {w['name']} | {r['precision']} | {r['batch1']['eventsim_ms']:.3f} | {r['batch1']['torch_ms']:.3f} | "
                f"{r['batch1']['speedup']:.1f}x | {r['batch64']['speedup']:.1f}x | "
                f"{r['batch64_threads']['speedup']:.2f}x ({r['batch64_threads']['side_by_side']:.2f}x) | {thin:.0%}, {thin64:.0%} | {lv} | "
                f"{r['synaptic_events_per_sample']:.3g} | {r['synaptic_events_per_s'] / 1e6:.0f} | "
                f"{r['ns_per_synaptic_event']:.2f} | {r.get('load_1min_before', float('nan')):.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5.5))
    for w in results["workloads"]:
        for r in w["runs"]:
            ev = [p["input_events"] for p in r["thinning"]]
            ms = [p["eventsim_ms"] for p in r["thinning"]]
            (line,) = a.plot(ev, ms, "o-", label=f"{w['name'][:38]} ({r['precision']})")
            a.plot(ev, [p["eventsim_ms_batch64"] for p in r["thinning"]], "x--", color=line.get_color())
    a.set(xlabel="input events per sample", ylabel="eventsim ms per sample (solid: batch 1, dashed: batch 64)",
          title="time against input event rate (10/25/50/100%)")  # fmt: skip
    a.set_xscale("log"), a.set_yscale("log"), a.grid(alpha=0.3), a.legend(fontsize=6)
    labels, b1, b64 = [], [], []
    for w in results["workloads"]:
        for r in w["runs"]:
            labels.append(f"{textwrap.shorten(w['name'], 34, placeholder='...')} ({r['precision']})")
            b1.append(r["batch1"]["speedup"]), b64.append(r["batch64"]["speedup"])
    pos = np.arange(len(labels))
    b.bar(pos - 0.2, b1, 0.4, label="batch 1"), b.bar(pos + 0.2, b64, 0.4, label="batch 64")
    b.axhline(GOALS["torch_batch1"], color="k", ls="--", lw=1, label="goal at batch 1 (10x)")
    b.set_xticks(pos, labels, fontsize=6, rotation=35, ha="right")
    b.set(ylabel="torch CPU time / eventsim time", title="speed-up over the torch target (one core)", yscale="log")
    b.legend(fontsize=7), b.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--samples", type=at_least(1), default=64)
    p.add_argument("--repeats", type=at_least(1), default=5)
    p.add_argument("--lava-samples", type=at_least(0), default=3)
    p.add_argument("--no-lava", action="store_true", help="skip the lava comparison")
    p.add_argument("--nmnist", default="runs/nmnist_student/student.pt",
                   help="trained N-MNIST CSNN checkpoint (python -m bench.nmnist_student)")  # fmt: skip
    p.add_argument("--digits", default="runs/demo/student.pt", help="trained digits student (make demo)")
    p.add_argument("--event-digits", default="runs/demo/nmnist/student.pt",
                   help="trained emulated-event-digits student (make demo)")  # fmt: skip
    p.add_argument("--out", default="runs/bench/eventsim")
    p.add_argument("--threads-only", action="store_true",
                   help="only batches of 64 on two threads against one (fewer than 128 samples are repeated up to 128)")  # fmt: skip
    args = p.parse_args(argv)
    from tqdm import tqdm

    torch.set_num_threads(1)  # one core for every target
    if args.threads_only:
        return threads_table(args)
    results: dict = {"machine": machine.describe() | {"torch_threads": torch.get_num_threads(), "numba_threads": 1},
                     "goals": GOALS, "workloads": []}  # fmt: skip
    out = Path(args.out)
    try:
        loads = workloads(args)
    except SnnDeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jobs = [(w, prec) for w in loads for prec in ("fixed", "float")]
    for w, prec in tqdm(jobs, desc="eventsim bench", unit="run", file=sys.stderr):
        entry = next((e for e in results["workloads"] if e["name"] == w["name"]), None)
        if entry is None:
            entry = {"name": w["name"], "weights": w["weights"], "runs": []}
            results["workloads"].append(entry)
        try:
            entry["runs"].append(measure(w, prec, args))
        except ConfigError as e:
            entry.setdefault("errors", []).append(f"{prec}: {e}")
        write_json_atomic(out / "eventsim.json", results)
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_json_atomic(out / "eventsim.json", results)
    md = f"Machine: {machine.line(results['machine'])}\n\n" + table(results)
    write_text_atomic(out / "eventsim.md", md)
    plot(results, out / "eventsim.png")
    print(md)
    for w in results["workloads"]:
        print(f"{w['name']}: weights {w['weights']}")
    print(f"written: {out / 'eventsim.json'}, {out / 'eventsim.md'}, {out / 'eventsim.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
