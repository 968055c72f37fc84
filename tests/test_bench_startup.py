"""bench.startup's table: a row per run and scenario, which code ran the kernels, the goals judged on
the runs they are about."""

from bench import startup


def _run(first_output_s: float, kernels: str) -> dict:
    stages = dict.fromkeys(startup.STAGES, 0.1)
    return {**stages, "first_window_s": 0.004, "process_to_first_output_s": first_output_s, "first_output_seen_s":
            first_output_s, "steady_window_ms": 0.5, "process_s": 2.0, "load_1min": 0.5, "windows": 24,
            "kernels": kernels}  # fmt: skip


def _results(setup: bool) -> dict:
    jit = "numba's JIT (the ahead-of-time module: not built)"
    runs = {"cold": [_run(40.0, jit)], startup.JIT_WARM: [_run(1.5, jit), _run(1.6, jit)],
            startup.TORCH_FIRST: [_run(7.0, jit)]}  # fmt: skip
    res = {"recording": "r.aedat", "target": "eventsim", "weights": "w", "cores": 2, "goals_s": startup.GOALS,
           "runs": runs}  # fmt: skip
    if setup:
        ahead = "compiled ahead of time (12 versions, x)"
        runs["after runtime.warm"] = [_run(0.7, ahead)]
        runs["warm"] = [_run(0.5, ahead), _run(0.6, ahead), _run(0.55, ahead)]
        res["setup_warm"] = {"wall_s": 300.0, "load_1min": 0.5, "printed": "built"}
    return res


def test_the_table_judges_the_warm_goal_on_the_runs_after_setup():
    md = startup.table(_results(setup=True))
    assert "| warm, median of 3 | 0.50 |" in md and md.count("| ahead of time |") == 5
    assert "| warm, numba's JIT, median of 2 |" in md and "| numba's JIT |" in md
    assert "Goal for warm: first output within 1 s of the process start: 0.55 s, met." in md
    assert "Goal for after runtime.warm: first output within 3 s of the process start: 0.70 s, met." in md
    assert "2.82x sooner than with numba's JIT" in md  # 1.55 / 0.55


def test_without_setup_no_goal_is_judged_on_numbas_runs():
    md = startup.table(_results(setup=False))
    assert "Goal for" not in md and "ahead of time |" not in md
    assert "First output, warm, numba's JIT: 25.8x sooner than cold" in md
