"""The benchmarks' default models are the files ``make demo`` writes."""

import re
from pathlib import Path

from bench import startup, stream

ROOT = Path(__file__).resolve().parents[1]


def test_stream_and_startup_benchmarks_read_the_event_model_make_demo_writes(tmp_path, monkeypatch):
    makefile = (ROOT / "Makefile").read_text()
    demo = re.search(r"^DEMO\s*:?=\s*(\S+)", makefile, re.M).group(1)
    written = re.search(r"convert\.to_nir \$\(DEMO\)/(\S+)/student\.pt --name (\S+) --precision fixed", makefile)
    assert written, "the Makefile's demo no longer converts its event student to fixed precision"
    assert ROOT / demo / written.group(1) / f"{written.group(2)}.nir" == startup.DEMO_MODEL
    # bench.stream takes that file when it is there (an untrained model only when it is not)
    fake = tmp_path / "model.fixed.nir"
    fake.write_text("")
    monkeypatch.setattr(startup, "DEMO_MODEL", fake)
    monkeypatch.setattr(stream, "ROOT", tmp_path)
    path, what = stream.model_path(tmp_path / "out")
    assert path == fake and what.startswith("trained event student")
