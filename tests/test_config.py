import json
from dataclasses import dataclass, field

import pytest

from core.config import parse_config
from core.errors import ConfigError


@dataclass
class Cfg:
    epochs: int = field(default=3, metadata={"help": "epochs"})
    lr: float = field(default=0.1, metadata={"help": "learning rate"})
    mode: str = field(default="a", metadata={"help": "mode", "choices": ["a", "b"]})
    bits: int | None = field(default=None, metadata={"help": "bits"})
    flag: bool = field(default=True, metadata={"help": "flag"})


def parse(argv):
    return parse_config(Cfg, argv, "prog", "test")


def test_defaults_file_flags_precedence(tmp_path):
    assert parse([]) == Cfg()
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"epochs": 7, "lr": 1, "bits": 8}))
    cfg = parse(["--config", str(f), "--epochs", "9", "--flag", "false"])
    assert cfg == Cfg(epochs=9, lr=1.0, bits=8, flag=False)
    toml = tmp_path / "c.toml"
    toml.write_text('mode = "b"\nbits = 4\n')
    assert parse(["--config", str(toml)]).mode == "b"
    assert parse(["--bits", "none"]).bits is None


def test_unknown_key_names_it(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"epochz": 7}))
    with pytest.raises(ConfigError, match=r"unknown key 'epochz'; known keys: epochs, lr"):
        parse(["--config", str(f)])


def test_wrong_type_names_key(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"epochs": "many"}))
    with pytest.raises(ConfigError, match=r"key 'epochs' must be int, got str 'many'"):
        parse(["--config", str(f)])
    f.write_text(json.dumps({"mode": "z"}))
    with pytest.raises(ConfigError, match=r"--mode = 'z' is not one of a, b"):
        parse(["--config", str(f)])


def test_missing_and_malformed_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse(["--config", str(tmp_path / "nope.json")])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse(["--config", str(bad)])


def test_config_file_that_is_binary_a_folder_another_format_or_gives_a_key_twice(tmp_path):
    """Each was a traceback (UnicodeDecodeError), 'does not exist', a YAML file read as JSON, or a key
    whose last value won without a word."""
    binary = tmp_path / "c.json"
    binary.write_bytes(b'{"epochs": 7}\xa0\xff')
    with pytest.raises(ConfigError, match=r"c.json is not JSON text \(byte 13 is not UTF-8\)"):
        parse(["--config", str(binary)])
    (tmp_path / "d.toml").mkdir()
    with pytest.raises(ConfigError, match=r"d.toml is a folder"):
        parse(["--config", str(tmp_path / "d.toml")])
    yaml = tmp_path / "c.yaml"
    yaml.write_text("epochs: 7\n")
    with pytest.raises(ConfigError, match=r"c.yaml must be a .json or a .toml file"):
        parse(["--config", str(yaml)])
    twice = tmp_path / "twice.json"
    twice.write_text('{"epochs": 7, "lr": 1, "epochs": 9}')
    with pytest.raises(ConfigError, match=r"twice.json is not valid JSON: key 'epochs' is given twice"):
        parse(["--config", str(twice)])
    twice.write_text('{"epochs": 7, "bits": 8}')
    assert parse(["--config", str(twice)]).epochs == 7


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    out = capsys.readouterr().out
    assert "--epochs" in out and "(default: 3)" in out and "--config" in out


@pytest.mark.parametrize(
    "module",
    [
        "train.bkd",
        "convert.to_nir",
        "runtime.run",
        "runtime.verify",
        "runtime.stream",
        "runtime.warm",
        "inputs.recording",
    ],
)
def test_every_commands_help_says_what_it_does_in_whole_sentences(module, capsys):
    """``--help`` shows the first paragraph of the command's docstring, joined, not its first line
    (train.bkd's stopped at "distilled from it with")."""
    import importlib

    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(module).main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {module} "), out[:80]  # as it is run (recording.py's said 'recording.py')
    description = out.split("\n\n")[1]
    assert description.startswith(f"``python -m {module}") and description.rstrip().endswith("."), description
