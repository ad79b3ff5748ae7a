from pathlib import Path

import pytest

from lamina.core.errors import ConfigError
from lamina.core.settings import load_settings


def write_yaml(ws: Path, text: str) -> None:
    ws.mkdir(exist_ok=True)
    (ws / "lamina.yaml").write_text(text)


def test_defaults_live_inside_the_workspace(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings.resolved_catalog_url == f"sqlite:///{tmp_path.resolve()}/lamina.db"
    assert settings.resolved_artifact_url == str(tmp_path.resolve() / "artifacts")
    assert (settings.log_level, settings.log_format, settings.server.port) == ("WARNING", "human", 8000)


def test_precedence_is_flags_then_env_then_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_yaml(tmp_path, "log_level: info\nserver:\n  port: 9000\n  host: 127.0.0.1\n")
    assert load_settings(tmp_path).server.port == 9000
    assert load_settings(tmp_path).log_level == "INFO"

    monkeypatch.setenv("LAMINA_SERVER__PORT", "9100")
    monkeypatch.setenv("LAMINA_LOG_LEVEL", "error")
    settings = load_settings(tmp_path)
    assert (settings.server.port, settings.log_level) == (9100, "ERROR")

    settings = load_settings(tmp_path, {"log_level": "DEBUG", "server": {"port": 9200}})
    assert (settings.server.port, settings.log_level) == (9200, "DEBUG")
    assert settings.server.host == "127.0.0.1"  # a flag for one nested key keeps the others


def test_relative_paths_in_yaml_are_relative_to_the_workspace(tmp_path: Path) -> None:
    write_yaml(tmp_path, "catalog_url: sqlite:///meta/cat.db\nartifact_url: store\n")
    settings = load_settings(tmp_path)
    assert settings.resolved_catalog_url == f"sqlite:///{tmp_path.resolve()}/meta/cat.db"
    assert settings.resolved_artifact_url == str(tmp_path.resolve() / "store")


@pytest.mark.parametrize(
    ("yaml_text", "env", "flags", "expected"),
    [
        ("server:\n  port: 70000\n", {}, {}, "invalid setting 'server.port' = 70000 from"),
        ("", {"LAMINA_SERVER__PORT": "abc"}, {}, "from environment variable LAMINA_SERVER__PORT"),
        ("", {}, {"log_format": "xml"}, "invalid setting 'log_format' = 'xml' from flag --log-format"),
        ("log_lvl: DEBUG\n", {}, {}, "unknown setting 'log_lvl'"),
        ("server:\n  prt: 1\n", {}, {}, "unknown setting 'server.prt'"),
        ("log_level: [debug\n", {}, {}, "invalid YAML at line 2"),
        ("- a\n- b\n", {}, {}, "expected a mapping of settings"),
        ("workspace: /elsewhere\n", {}, {}, "'workspace' cannot be set"),
    ],
)
def test_bad_settings_fail_with_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_text: str, env: dict, flags: dict, expected: str
) -> None:
    write_yaml(tmp_path, yaml_text)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, flags)
    assert expected in str(info.value)
    assert "\n" not in info.value.message


def test_unknown_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    write_yaml(tmp_path, "catalog: x\n")
    with pytest.raises(ConfigError, match="allowed: catalog_url, artifact_url"):
        load_settings(tmp_path)


def test_secrets_are_hidden_in_redacted_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMINA_SERVER__ADMIN_KEY", "s3cret-admin")
    write_yaml(
        tmp_path,
        "catalog_url: postgresql+psycopg://me:hunter2@db/lamina\n"
        "artifact_options: {secret: topsecret, endpoint_url: http://x}\n",
    )
    settings = load_settings(tmp_path)
    assert settings.server.admin_key is not None
    assert settings.server.admin_key.get_secret_value() == "s3cret-admin"
    shown = str(settings.redacted())
    for secret in ("s3cret-admin", "hunter2", "topsecret"):
        assert secret not in shown
    assert "http://x" in shown


def test_binding_beyond_localhost_needs_an_admin_key(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, {"server": {"host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="without an admin key"):
        settings.server.require_secure_bind()
    load_settings(tmp_path).server.require_secure_bind()  # localhost is fine without one
    load_settings(tmp_path, {"server": {"host": "0.0.0.0", "admin_key": "k"}}).server.require_secure_bind()
