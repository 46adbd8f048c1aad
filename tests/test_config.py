"""Config loading: every fault in a file is reported at once, each pointing somewhere real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from squall.config import expand_env, load
from squall.errors import ConfigError

README = Path(__file__).resolve().parent.parent / "README.md"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "squall.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_setting_points_to_a_readme_section_that_exists(tmp_path: Path) -> None:
    path = _write(tmp_path, 'model = "m"\nmax_tokenz = 5\n')
    with pytest.raises(ConfigError, match="max_tokenz") as info:
        load(path, env={})
    section = re.search(r"see README: ([^)]+)\)", str(info.value))
    assert section is not None
    headings = {
        line.lstrip("#").strip()
        for line in README.read_text(encoding="utf-8").splitlines()
        if line.startswith("##")
    }
    assert section.group(1) in headings


def test_unset_variable_does_not_hide_an_unknown_setting(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'model = "m"\nrpn = 5\n[[endpoints]]\nbase_url = "${NO_URL}"\nkeys = ["${NO_KEY}"]\n',
    )
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "unknown setting 'rpn'" in message
    assert "endpoints[0].base_url: ${NO_URL} is not set" in message
    assert "endpoints[0].keys[0]: ${NO_KEY} is not set" in message
    # The unset base_url is reported once, as unset: not also as a URL that lacks http://.
    assert "must start with http" not in message


def test_every_bad_value_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, 'max_tokens = "lots"\nwindow = "wide"\ntimeout = 1\n')
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    message = str(info.value)
    assert "max_tokens" in message and "window" in message and "'timeout'" in message


def test_expand_env_names_every_unset_variable() -> None:
    with pytest.raises(ConfigError, match=r"a: \$\{A\} is not set.*b\[1\]: \$\{B\} is not set"):
        expand_env({"a": "${A}", "b": ["x", "${B}"], "c": "${C:-d}"}, {})
    assert expand_env({"a": "${A}", "c": "${C:-d}"}, {"A": "1"}) == {"a": "1", "c": "d"}


def test_flags_land_on_every_endpoint_and_on_keys_with_limits_of_their_own(
    tmp_path: Path,
) -> None:
    path = _write(
        tmp_path,
        '[[endpoints]]\nbase_url = "http://a/v1"\nkeys = ["k1", { key = "k2", rpm = 5 }]\n'
        '[[endpoints]]\nbase_url = "http://b/v1"\n',
    )
    cfg = load(path, env={}, overrides={"rpm": 60, "concurrency": 3, "model": "m"})
    assert cfg.model == "m"
    assert [ep.name for ep in cfg.endpoints] == ["endpoint1", "endpoint2"]
    assert all(ep.rpm == 60 and ep.max_concurrency == 3 for ep in cfg.endpoints)
    assert cfg.endpoints[0].keys[1].rpm == 60 and cfg.endpoints[0].keys[1].max_concurrency == 3


def test_base_url_and_key_env_flags_make_the_one_endpoint(tmp_path: Path) -> None:
    cfg = load(overrides={"base_url": "http://x/v1", "key_env": ["K"]}, env={"K": "sk-1"})
    assert [(ep.name, ep.base_url) for ep in cfg.endpoints] == [("default", "http://x/v1")]
    assert cfg.endpoints[0].keys[0].key.reveal() == "sk-1"
    with pytest.raises(ConfigError, match="--key-env K: the variable K is not set"):
        load(overrides={"base_url": "http://x/v1", "key_env": ["K"]}, env={})
    with pytest.raises(ConfigError, match="--key-env needs --base-url"):
        load(
            _write(tmp_path, '[[endpoints]]\nbase_url = "http://a/v1"\n'),
            overrides={"key_env": ["K"]},
            env={},
        )
