"""Settings from the client are untrusted: bad values are named, the old config stays."""

from __future__ import annotations

import pytest

from acepilot.server.lsp.config import Config, ConfigError, settings_section, update


def test_defaults_and_overlay() -> None:
    config = update(Config(), {"maxNewTokens": 32, "temperature": 0.2, "unknownKey": 1})
    assert config.max_new_tokens == 32 and config.temperature == 0.2
    assert config.enabled_for("python") and not config.enabled_for("markdown")
    again = update(config, {"temperature": None})
    assert again.temperature == 0.0 and again.max_new_tokens == 32


@pytest.mark.parametrize(
    ("raw", "setting"),
    [
        ({"maxNewTokens": "64"}, "acepilot.maxNewTokens"),
        ({"maxNewTokens": 0}, "acepilot.maxNewTokens"),
        ({"maxNewTokens": True}, "acepilot.maxNewTokens"),
        ({"temperature": float("nan")}, "acepilot.temperature"),
        ({"topP": 0}, "acepilot.topP"),
        ({"backend": "cloud"}, "acepilot.backend"),
        ({"backend": "remote"}, "acepilot.remoteUrl"),
        ({"remoteUrl": "ftp://x"}, "acepilot.remoteUrl"),
        ({"remoteToken": "a\nb"}, "acepilot.remoteToken"),
        ({"languages": {"python": "yes"}}, "acepilot.languages"),
        ({"languages": []}, "acepilot.languages"),
        ({"model": ""}, "acepilot.model"),
        ({"debounceMs": -1}, "acepilot.debounceMs"),
        ({"snippetTokens": 5000, "contextTokens": 1000}, "acepilot.snippetTokens"),
    ],
)
def test_invalid_values_name_the_setting(raw: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        update(Config(), raw)
    assert setting in str(info.value)


def test_all_or_nothing() -> None:
    base = Config(max_new_tokens=10)
    with pytest.raises(ConfigError) as info:
        update(base, {"maxNewTokens": 20, "temperature": -1, "maxLines": "x"})
    assert len(info.value.problems) == 2
    assert base.max_new_tokens == 10


def test_not_an_object() -> None:
    with pytest.raises(ConfigError, match="acepilot: settings must be an object"):
        update(Config(), [1, 2])


def test_settings_section_shapes() -> None:
    assert settings_section({"acepilot": {"a": 1}}) == {"a": 1}
    assert settings_section({"settings": {"acepilot": {"a": 1}}}) == {"a": 1}
    assert settings_section({"a": 1}) == {"a": 1}


def test_token_never_in_public_view() -> None:
    config = update(
        Config(), {"backend": "remote", "remoteUrl": "http://h/v1", "remoteToken": "s3cr3t"}
    )
    assert "s3cr3t" not in repr(config) and "s3cr3t" not in str(config.public())


def test_remote_fim_telemetry_and_kv_reuse_settings() -> None:
    config = update(Config(), {"remoteFim": "off", "telemetry": False, "kvReuse": False})
    assert (config.remote_fim, config.telemetry, config.kv_reuse) == ("off", False, False)
    with pytest.raises(ConfigError, match=r"acepilot\.remoteFim"):
        update(Config(), {"remoteFim": "maybe"})
    with pytest.raises(ConfigError, match=r"acepilot\.remoteFim"):
        update(Config(), {"remote": {"fim": True}})  # nested spelling, same checks
    explicit = update(Config(), {"remoteFim": "on", "remote": {"fim": "off"}})
    assert explicit.remote_fim == "on"  # the flat key wins


def test_threads_are_capped_at_the_machines_cores() -> None:
    import os

    cores = os.cpu_count() or 1
    assert update(Config(), {"threads": 1024}).threads == cores
    assert update(Config(), {"threads": 1}).threads == 1
    with pytest.raises(ConfigError, match=r"acepilot\.threads"):
        update(Config(), {"threads": 0})
