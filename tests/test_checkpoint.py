import os
import pickle

import pytest
import torch

from core.errors import CheckpointError
from train.checkpoint import load_checkpoint, model_from_checkpoint, neuron_parameters, save_checkpoint
from train.models import build_model


def payload(model, arch="digits_csnn", **extra):
    return {"kind": "student", "arch": arch, "arch_args": {}, "state_dict": model.state_dict(),
            "neurons": neuron_parameters(model), **extra}  # fmt: skip


def test_round_trip_is_plain_data(tmp_path):
    m = build_model("digits_csnn")
    path = tmp_path / "m.pt"
    save_checkpoint(path, payload(m, config={"lr": 0.1}, dataset={"name": "digits"}))
    raw = torch.load(path, weights_only=True)  # plain data: weights-only loading works directly
    assert raw["format"] == "snn-deploy-checkpoint"
    assert set(raw["neurons"]) == {"features.1", "features.4", "head.3"}
    assert raw["neurons"]["head.3"] == {
        "tau": 2e-3,
        "v_threshold": 1.0,
        "dt": 1e-3,
        "v_reset": 0.0,
        "v_leak": 0.0,
        "beta": 0.5,
    }
    m2 = model_from_checkpoint(load_checkpoint(path, kind="student"))
    x = (torch.rand(4, 3, 1, 8, 8) < 0.5).float()
    assert torch.equal(m(x), m2(x))
    assert not list(tmp_path.glob(".*tmp")), "no temporary file is left behind"


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "snn-deploy-checkpoint", "x": Exploit()}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil.pt: it is not plain data"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="raw.pkl"):
        load_checkpoint(raw)
    assert not (tmp_path / "pwned").exists()


def test_corrupt_truncated_missing_foreign(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, payload(build_model("digits_csnn")))
    data = good.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt is corrupt or truncated"):
        load_checkpoint(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save(build_model("digits_csnn").state_dict(), foreign)  # a bare state dict from elsewhere
    with pytest.raises(CheckpointError, match="not a snn-deploy checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="is a student checkpoint; expected teacher"):
        load_checkpoint(good, kind="teacher")


def test_bad_contents(tmp_path):
    m = build_model("digits_csnn")
    p = tmp_path / "a.pt"
    save_checkpoint(p, payload(m, arch="lenet"))
    with pytest.raises(CheckpointError, match="unknown model 'lenet'"):
        model_from_checkpoint(load_checkpoint(p))
    save_checkpoint(p, payload(m, arch="nmnist_csnn"))
    with pytest.raises(CheckpointError, match="weights do not fit architecture 'nmnist_csnn'"):
        model_from_checkpoint(load_checkpoint(p))
    sd = m.state_dict()
    sd["features.0.weight"][0, 0, 0, 0] = float("nan")
    save_checkpoint(p, payload(m) | {"state_dict": sd})
    with pytest.raises(CheckpointError, match="'features.0.weight' holds NaN"):
        model_from_checkpoint(load_checkpoint(p))


def test_li_readout_round_trip(tmp_path):
    """An LI readout's parameters are recorded (kind "li", no threshold) and the model rebuilds exactly."""
    m = build_model("digits_csnn", readout="li")
    path = tmp_path / "li.pt"
    save_checkpoint(path, {**payload(m), "arch_args": {"readout": "li"}})
    raw = torch.load(path, weights_only=True)
    assert raw["neurons"]["head.3"] == {"tau": 2e-3, "dt": 1e-3, "v_leak": 0.0, "beta": 0.5, "kind": "li"}
    assert raw["neurons"]["features.1"]["v_threshold"] == 1.0
    m2 = model_from_checkpoint(load_checkpoint(path, kind="student"))
    x = (torch.rand(4, 3, 1, 8, 8) < 0.5).float()
    assert torch.equal(m(x), m2(x))
    # the spiking architecture does not take an LI's state dict (and vice versa): a clear error
    save_checkpoint(path, payload(m))
    with pytest.raises(CheckpointError, match="weights do not fit architecture 'digits_csnn'"):
        model_from_checkpoint(load_checkpoint(path, kind="student"))
