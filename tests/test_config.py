"""Config loading: schema validation, one-line errors, exit 2, env and flag overrides."""
import subprocess

import pytest
import yaml

from lumen import config
from conftest import CONFIG_RMB, PY, ROOT


def _write(tmp_path, mutate):
    cfg = yaml.safe_load(CONFIG_RMB.read_text())
    mutate(cfg)
    p = tmp_path / "rmb_v17.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_shipped_config_loads_with_blueprint_values():
    cfg = config.load(CONFIG_RMB, env={})
    assert cfg["loop"] == {"hz": 5, "batch_size": 20, "flush_ms": 500}
    assert cfg["safety_gates"]["risk_band_block"] == ["RISK"]
    assert cfg["exporter"]["port"] == 9409


@pytest.mark.parametrize("mutate, key, expected", [
    (lambda c: c["loop"].__setitem__("hz", "fast"), "loop.hz", "is not of type 'number'"),
    (lambda c: c["safety_gates"].__setitem__("risk_band_block", ["DANGER"]),
     "safety_gates.risk_band_block.0", "is not one of"),
    (lambda c: c["exporter"].pop("port"), "exporter", "'port' is a required property"),
    (lambda c: c["loop"].__setitem__("hz_typo", 3), "loop", "Additional properties"),
    (lambda c: c["memory_bridge"].__setitem__("value_hasher", "crc32"),
     "memory_bridge.value_hasher", "is not one of"),
])
def test_bad_config_is_one_clear_line(tmp_path, mutate, key, expected):
    p = _write(tmp_path, mutate)
    with pytest.raises(config.ConfigError) as e:
        config.load(p, "rmb_v17", env={})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}: {key}: ")
    assert expected in msg


def test_env_overrides_config_and_is_validated(tmp_path):
    cfg = config.load(CONFIG_RMB, env={"RMB_EXPORTER_PORT": "9555", "RESIDUAL_MAX": "0.8"})
    assert cfg["exporter"]["port"] == 9555
    assert cfg["safety_gates"]["residual_entropy_max"] == 0.8
    with pytest.raises(config.ConfigError, match=r"RESIDUAL_MAX=1.7.*residual_entropy_max"):
        config.load(CONFIG_RMB, env={"RESIDUAL_MAX": "1.7"})


def test_flags_override_env():
    cfg = config.load(CONFIG_RMB, env={"RMB_EXPORTER_PORT": "9555"},
                      overrides={"exporter.port": 9600, "loop.hz": None})
    assert cfg["exporter"]["port"] == 9600
    assert cfg["loop"]["hz"] == 5


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(config.ConfigError, match="no such config file"):
        config.load(tmp_path / "rmb_v17.yaml", "rmb_v17")
    p = tmp_path / "rmb_v17.yaml"
    p.write_text("loop: [unclosed\n")
    with pytest.raises(config.ConfigError, match=r"not valid YAML \(line"):
        config.load(p, "rmb_v17")


@pytest.mark.parametrize("script", ["rmb/rmb_emitter.py", "exporters/rmb_exporter_v17.py"])
def test_entry_points_exit_2_on_bad_config(tmp_path, script):
    p = _write(tmp_path, lambda c: c["loop"].__setitem__("batch_size", 0))
    r = subprocess.run([PY, str(ROOT / script), "--config", str(p)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "loop.batch_size" in r.stderr and "minimum of 1" in r.stderr
    assert not (tmp_path / "logs" / "rmb_events.jsonl").exists()  # nothing started


def test_every_x_env_names_a_real_key():
    import json
    schema = json.loads((ROOT / "configs/schemas/rmb_v17.schema.json").read_text())
    names = dict((v, k) for k, v in config.env_keys(schema))
    assert names["RMB_EXPORTER_PORT"] == ("exporter", "port")
    assert names["RESIDUAL_MAX"] == ("safety_gates", "residual_entropy_max")
