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


@pytest.mark.parametrize(
    "mutate, key, expected",
    [
        (lambda c: c["loop"].__setitem__("hz", "fast"), "loop.hz", "is not of type 'number'"),
        (
            lambda c: c["safety_gates"].__setitem__("risk_band_block", ["DANGER"]),
            "safety_gates.risk_band_block.0",
            "is not one of",
        ),
        (lambda c: c["exporter"].pop("port"), "exporter", "'port' is a required property"),
        (lambda c: c["loop"].__setitem__("hz_typo", 3), "loop", "Additional properties"),
        (
            lambda c: c["memory_bridge"].__setitem__("value_hasher", "crc32"),
            "memory_bridge.value_hasher",
            "is not one of",
        ),
    ],
)
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
    cfg = config.load(
        CONFIG_RMB,
        env={"RMB_EXPORTER_PORT": "9555"},
        overrides={"exporter.port": 9600, "loop.hz": None},
    )
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
    r = subprocess.run(
        [PY, str(ROOT / script), "--config", str(p)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
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


# --- issue 13.5: every bad config is one line and exit 2, whatever is wrong with it ------

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402

from conftest import free_port, wait_until  # noqa: E402

CONFIG_API = ROOT / "configs" / "api_v18.yaml"
EXPORTER = ROOT / "exporters" / "rmb_exporter_v17.py"
EMITTER = ROOT / "rmb" / "rmb_emitter.py"
API = ROOT / "api" / "read_only.py"
DB_INIT = ROOT / "tools" / "storage" / "sqlite_init_v17_18.py"
SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


def _kind(p):
    return p.name[: -len(".yaml")]


def _copy(tmp_path, mutate=None, src=CONFIG_RMB, name="my_rmb.yaml"):
    """A copy of a shipped config under another name, optionally changed."""
    cfg = yaml.safe_load(src.read_text())
    if mutate:
        mutate(cfg)
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def _clean_env(**extra):
    """os.environ without any variable a config schema reads, plus `extra`."""
    names = set()
    for s in (ROOT / "configs" / "schemas").glob("*.schema.json"):
        names |= {v for _, v in config.env_keys(json.loads(s.read_text()))}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra)
    return env


def _one_line(e_or_stderr):
    msg = str(e_or_stderr).strip()
    assert msg.count("\n") == 0, msg
    assert "Traceback" not in msg
    return msg


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"loop:\n  hz: 5 # caf\xe9\n", "not UTF-8 text (byte 0xe9 on line 2)"),
        (b"\xff\xfe" + "loop: {}\n".encode("utf-16-le"), "not UTF-8 text (byte 0xff on line 1)"),
        (None, "is a directory, not a config file"),
    ],
)
@pytest.mark.parametrize("name", ["rmb_v17", None])
def test_unreadable_files_are_one_line_naming_the_file(tmp_path, content, expected, name):
    p = tmp_path / "my_rmb.yaml"
    if content is None:
        p.mkdir()
    else:
        p.write_bytes(content)
    with pytest.raises(config.ConfigError) as e:
        config.load(p, name, env={})
    assert _one_line(e.value) == f"{p}: {expected}"


@pytest.mark.parametrize(
    "old, new, key, shown",
    [
        ("hz: 5 ", "hz: .nan ", "loop.hz", "nan"),
        ("hz: 5 ", "hz: .inf ", "loop.hz", "inf"),
        ("hz: 5 ", "hz: -.Inf ", "loop.hz", "-inf"),
        (
            "residual_entropy_max: 0.85",
            "residual_entropy_max: .NaN",
            "safety_gates.residual_entropy_max",
            "nan",
        ),
    ],
)
def test_nan_and_infinity_in_a_file_are_rejected(tmp_path, old, new, key, shown):
    p = tmp_path / "rmb.yaml"
    text = CONFIG_RMB.read_text()
    assert text.count(old) == 1
    p.write_text(text.replace(old, new))
    for name in ("rmb_v17", None):
        with pytest.raises(config.ConfigError) as e:
            config.load(p, name, env={})
        assert _one_line(e.value) == f"{p}: {key}: {shown} is not a finite number"


def test_nan_inside_a_list_names_its_index(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text(
        (ROOT / "configs/resonance_v3.policy.yaml")
        .read_text()
        .replace("threshold: 0.03", "threshold: .nan")
    )
    with pytest.raises(config.ConfigError) as e:
        config.load(p, env={})
    assert str(e.value) == f"{p}: policies.1.evaluate.threshold: nan is not a finite number"


@pytest.mark.parametrize("raw", ["nan", ".nan", "NaN", "inf", "-.inf", "Infinity"])
def test_nan_and_infinity_from_env_are_rejected(raw):
    with pytest.raises(config.ConfigError) as e:
        config.load(CONFIG_RMB, env={"RMB_HZ": raw})
    msg = _one_line(e.value)
    assert msg.startswith(f"{CONFIG_RMB} (with $RMB_HZ={raw}): loop.hz: ")
    assert msg.endswith("is not a finite number")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_from_flags_are_rejected(value):
    with pytest.raises(config.ConfigError) as e:
        config.load(CONFIG_RMB, env={}, overrides={"loop.hz": value})
    assert _one_line(e.value) == (
        f"{CONFIG_RMB} (with --hz={value}): loop.hz: {value} is not a finite number"
    )


def _hz_keys(schema, prefix=()):
    for key, sub in schema.get("properties", {}).items():
        if "hz" in key:
            yield prefix + (key,), sub
        yield from _hz_keys(sub, prefix + (key,))


def test_every_rate_has_a_sane_range():
    seen = 0
    for s in sorted((ROOT / "configs" / "schemas").glob("*.schema.json")):
        for keypath, sub in _hz_keys(json.loads(s.read_text())):
            seen += 1
            where = f"{s.name}: {'.'.join(keypath)}"
            assert sub.get("minimum", 0) >= 0.001, where
            assert "maximum" in sub and sub["maximum"] <= 1e6, where
    assert seen >= 7  # rmb loop.hz, safety loop.hz, trackA fake.hz, ure's four


def test_tiny_rates_are_rejected_from_flags_and_env():
    with pytest.raises(config.ConfigError) as e:
        config.load(CONFIG_RMB, env={}, overrides={"loop.hz": 1e-300})
    assert _one_line(e.value) == (
        f"{CONFIG_RMB} (with --hz=1e-300): loop.hz: 1e-300 is less than the minimum of 0.001"
    )
    # YAML reads "1e-300" as a string; a numeric key reads it as the number it means.
    with pytest.raises(config.ConfigError, match=r"\$RMB_HZ=1e-300\): loop.hz: 1e-300 is less"):
        config.load(CONFIG_RMB, env={"RMB_HZ": "1e-300"})
    assert config.load(CONFIG_RMB, env={"RMB_HZ": "1e-3"})["loop"]["hz"] == 0.001
    with pytest.raises(config.ConfigError, match=r"\$URE_BASE_HZ=1e9\): loop.base_hz: .*maximum"):
        config.load(ROOT / "configs/ure_v18.yaml", env={"URE_BASE_HZ": "1e9"})


@pytest.mark.parametrize(
    "cfg_path, var, key",
    [
        (CONFIG_RMB, "RMB_EXPORTER_HOST", "exporter.host"),
        (CONFIG_API, "API_HOST", "api.host"),
        (ROOT / "configs/ure_v18.yaml", "URE_EXPORTER_HOST", "exporter.host"),
    ],
)
def test_hosts_to_bind_must_resolve(cfg_path, var, key):
    with pytest.raises(config.ConfigError) as e:
        config.load(cfg_path, env={var: "nohost.invalid"})
    assert _one_line(e.value).startswith(
        f"{cfg_path} (with ${var}=nohost.invalid): {key}: cannot resolve 'nohost.invalid' ("
    )
    with pytest.raises(config.ConfigError) as e:  # a newline in a value stays on one line
        config.load(cfg_path, env={var: "bad\nhost"})
    assert "bad\\nhost" in _one_line(e.value)
    for ok in ("localhost", "127.0.0.1", "0.0.0.0", "::", "::1"):
        assert config.get(config.load(cfg_path, env={var: ok}), key) == ok


def test_host_in_the_file_or_a_flag_must_resolve(tmp_path):
    p = _copy(tmp_path, lambda c: c["exporter"].__setitem__("host", "nohost.invalid"))
    with pytest.raises(config.ConfigError) as e:
        config.load(p, env={})
    assert _one_line(e.value).startswith(f"{p}: exporter.host: cannot resolve 'nohost.invalid'")
    with pytest.raises(config.ConfigError) as e:
        config.load(CONFIG_RMB, env={}, overrides={"exporter.host": "nohost.invalid"})
    assert str(e.value).startswith(f"{CONFIG_RMB} (with --host=nohost.invalid): exporter.host: ")


def test_db_in_a_missing_directory_is_an_error(workdir):
    missing = workdir / "nowhere" / "sub"
    with pytest.raises(config.ConfigError) as e:
        config.load(CONFIG_API, env={"LUMEN_DB": str(missing / "lumen.db")})
    assert _one_line(e.value) == (
        f"{CONFIG_API} (with $LUMEN_DB={missing}/lumen.db): db: directory {missing} does not exist"
    )
    with pytest.raises(config.ConfigError, match=r"\(with --db=\.\./x/lumen.db\): db: directory"):
        config.load(CONFIG_API, env={}, overrides={"db": "../x/lumen.db"})
    with pytest.raises(config.ConfigError, match=f"db: {workdir} is a directory"):
        config.load(CONFIG_API, env={"LUMEN_DB": str(workdir)})
    assert not (workdir / "nowhere").exists()
    # A relative path inside the working directory is created on first use (the default).
    assert config.load(CONFIG_API, env={"LUMEN_DB": "data/x/lumen.db"})["db"] == "data/x/lumen.db"
    assert config.load(CONFIG_API, env={})["db"] == "data/lumen.db"


@pytest.mark.parametrize("src", SHIPPED, ids=_kind)
def test_the_schema_is_chosen_by_content_not_file_name(tmp_path, src):
    copy = tmp_path / "my_copy.yaml"
    shutil.copy(src, copy)
    assert config.load(copy, env={}) == config.load(src, _kind(src), env={})


def test_unknown_or_wrong_kind_is_one_line(tmp_path):
    p = tmp_path / "notes.yaml"
    p.write_text("colour: blue\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(p, env={})
    assert _one_line(e.value) == (
        f"{p}: not a known kind of config (top-level keys: colour); known kinds: "
        + ", ".join(_kind(s) for s in SHIPPED)
    )
    p = _copy(tmp_path, lambda c: c.pop("memory_bridge"))
    with pytest.raises(
        config.ConfigError, match="closest is rmb_v17, which also needs memory_bridge; known kinds"
    ):
        config.load(p, env={})
    ure = ROOT / "configs/ure_v18.yaml"
    with pytest.raises(config.ConfigError) as e:
        config.load(ure, "rmb_v17", env={})
    assert str(e.value) == f"{ure}: this is a ure_v18 config, not rmb_v17"
    p.write_text("")
    with pytest.raises(config.ConfigError, match=r"my_rmb.yaml: empty config file$"):
        config.load(p, env={})
    p.write_text("- loop\n")
    with pytest.raises(config.ConfigError, match="top level is a list, expected a mapping"):
        config.load(p, env={})


def _cli(tmp_path, *args, **env):
    return subprocess.run(
        [PY, "-m", "lumen.config", *map(str, args)],
        cwd=tmp_path,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_config_get_works_for_any_file_name_and_fails_in_one_line(tmp_path):
    _copy(tmp_path)
    r = _cli(tmp_path, "get", "my_rmb.yaml", "exporter.port")
    assert (r.returncode, r.stdout, r.stderr) == (0, "9409\n", "")
    r = _cli(tmp_path, "get", "my_rmb.yaml", "exporter.port", RMB_EXPORTER_PORT="9555")
    assert r.stdout == "9555\n"
    r = _cli(tmp_path, "check", "my_rmb.yaml")
    assert r.returncode == 0 and "my_rmb.yaml: OK" in r.stdout
    (tmp_path / "bad.yaml").write_bytes(b"loop:\n  hz: \xff\n")
    for args, env, needle in [
        (("get", "my_rmb.yaml", "exporter.nope"), {}, "my_rmb.yaml: no key 'exporter.nope'"),
        (("get", "my_rmb.yaml", "exporter.port.deeper"), {}, "no key 'exporter.port.deeper'"),
        (("get", "bad.yaml", "loop.hz"), {}, "bad.yaml: not UTF-8 text"),
        (("get", str(tmp_path), "loop.hz"), {}, f"{tmp_path}: is a directory"),
        (("get", "my_rmb.yaml", "loop.hz"), {"RMB_HZ": "nan"}, "$RMB_HZ=nan): loop.hz: nan is"),
        (
            ("get", "my_rmb.yaml", "exporter.port"),
            {"RMB_EXPORTER_HOST": "nohost.invalid"},
            "my_rmb.yaml (with $RMB_EXPORTER_HOST=nohost.invalid): exporter.host: cannot resolve",
        ),
    ]:
        r = _cli(tmp_path, *args, **env)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stdout == ""
        assert needle in _one_line(r.stderr), (args, r.stderr)


def test_a_renamed_copy_runs_the_exporter_and_answers_config_get(tmp_path, procs):
    port = free_port()
    _copy(tmp_path, lambda c: c["exporter"].__setitem__("port", port))
    r = _cli(tmp_path, "get", "my_rmb.yaml", "exporter.port")
    assert (r.returncode, r.stdout.strip()) == (0, str(port)), r.stderr
    p = procs.start(EXPORTER, "--config", "my_rmb.yaml", "--name", "copy_exporter")
    wait_until(
        lambda: p.poll() is not None or (tmp_path / "run/copy_exporter.pid").exists(),
        what="exporter from my_rmb.yaml",
    )
    assert p.poll() is None, p.stderr.read().decode()


def _nan_copy(tmp_path):
    return _copy(tmp_path, lambda c: c["loop"].__setitem__("hz", float("nan")), name="nan.yaml")


@pytest.mark.parametrize(
    "case",
    [
        "not_utf8",
        "directory",
        "exporter_host",
        "api_host",
        "db_dir",
        "hz_tiny",
        "hz_nan_file",
        "hz_nan_env",
        "hz_inf_flag",
    ],
)
def test_entry_points_exit_2_with_one_line_and_start_nothing(tmp_path, case):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(CONFIG_RMB.read_bytes().replace(b"200ms loop", b"200 \xb5s loop"))
    (tmp_path / "cfgdir").mkdir()
    missing = tmp_path / "missing" / "dir"
    args, env, needles = {
        "not_utf8": ([EXPORTER, "--config", bad], {}, ["bad.yaml: not UTF-8 text"]),
        "directory": (
            [EXPORTER, "--config", tmp_path / "cfgdir"],
            {},
            [f"{tmp_path / 'cfgdir'}: is a directory"],
        ),
        "exporter_host": (
            [EXPORTER, "--config", CONFIG_RMB, "--port", "0"],
            {"RMB_EXPORTER_HOST": "nohost.invalid"},
            [
                str(CONFIG_RMB),
                "$RMB_EXPORTER_HOST=nohost.invalid",
                "exporter.host",
                "cannot resolve 'nohost.invalid'",
            ],
        ),
        "api_host": (
            [API, "--config", CONFIG_API, "--port", "0"],
            {"API_HOST": "nohost.invalid"},
            [
                str(CONFIG_API),
                "$API_HOST=nohost.invalid",
                "api.host",
                "cannot resolve 'nohost.invalid'",
            ],
        ),
        "db_dir": (
            [DB_INIT, "--config", CONFIG_API],
            {"LUMEN_DB": str(missing / "lumen.db")},
            ["$LUMEN_DB=", "db: directory", f"{missing} does not exist"],
        ),
        "hz_tiny": (
            [EMITTER, "--config", CONFIG_RMB, "--hz", "1e-300", "--count", "3"],
            {},
            ["(with --hz=1e-300): loop.hz: 1e-300 is less than the minimum of 0.001"],
        ),
        "hz_nan_file": (
            [EMITTER, "--config", _nan_copy(tmp_path), "--count", "3"],
            {},
            ["nan.yaml: loop.hz: nan is not a finite number"],
        ),
        "hz_nan_env": (
            [EMITTER, "--config", CONFIG_RMB, "--count", "3"],
            {"RMB_HZ": "nan"},
            ["(with $RMB_HZ=nan): loop.hz: nan is not a finite number"],
        ),
        "hz_inf_flag": (
            [EMITTER, "--config", CONFIG_RMB, "--hz", "inf", "--count", "3"],
            {},
            ["(with --hz=inf): loop.hz: inf is not a finite number"],
        ),
    }[case]
    r = subprocess.run(
        [PY, *map(str, args)],
        cwd=tmp_path,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    msg = _one_line(r.stderr)
    assert msg.startswith("error: ")
    for n in needles:
        assert n in msg, (n, msg)
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*.pid"))
    assert not (tmp_path / "logs" / "rmb_events.jsonl").exists()
    assert not (tmp_path / "missing").exists()


# -- the config check: the compiled validator's yes is jsonschema's yes --------------------
from datetime import date  # noqa: E402

from hypothesis import given, settings, strategies as st  # noqa: E402

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.just(date(2025, 11, 1)),  # what YAML makes of 2025-11-01
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_config_check_agrees_with_jsonschema(data):
    """lumen.config validates with jsonschema_rs and loads jsonschema only for the message
    of a bad config: a config the fast validator accepts must be one jsonschema accepts."""
    import copy

    import jsonschema

    name = data.draw(st.sampled_from(sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))))
    cfg = yaml.safe_load((ROOT / "configs" / name).read_text())
    schema_file = ROOT / "configs/schemas" / name.replace(".yaml", ".schema.json")
    schema = json.loads(schema_file.read_text())
    cfg = copy.deepcopy(cfg)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(cfg))[1:]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        node = cfg
        for k in path[:-1]:
            node = node[k]
        if data.draw(st.booleans()):
            node[path[-1]] = data.draw(VALUES)
        else:
            del node[path[-1]]
    want = not list(jsonschema.Draft7Validator(schema).iter_errors(cfg))
    try:
        config._check(cfg, schema, name)
        got = True
    except config.ConfigError:
        got = False
    assert got == want, (name, cfg)
