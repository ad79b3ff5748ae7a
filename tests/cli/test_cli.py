import json
import os
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path

import pytest

from lamina.core.catalog import ModelVersion, Run, Source
from lamina.core.catalog.db import create_catalog_engine, upgrade_schema
from lamina.core.workspace import Workspace
from tests.conftest import run_lamina

COMMANDS = ["quickstart", "init", "status", "lineage", "upgrade", "check", "gc", "config"]


def assert_one_clean_error(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert lines[0].startswith("error: "), stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  fix: ")), stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def test_help_reads_well(cli) -> None:
    top = cli("--help")
    assert top.code == 0
    for command in COMMANDS:
        assert command in top.out
    assert "LAMINA_HOME" in top.out
    for command in COMMANDS:
        result = cli(command, "--help")
        assert result.code == 0, command
        assert f"Usage: lamina {command}" in result.out
    assert cli().code == 2  # no command: help, as a usage error


def test_version(cli) -> None:
    from lamina import __version__

    result = cli("--version")
    assert (result.code, result.out.strip()) == (0, f"lamina {__version__}")


def test_init_status_lineage_check_gc_config(cli, tmp_path: Path) -> None:
    ws_dir = tmp_path / "w"
    result = cli("init", str(ws_dir))
    assert result.code == 0 and "Created workspace" in result.out
    assert "Checked existing" in cli("init", str(ws_dir)).out

    ws = Workspace.open(ws_dir)
    src = tmp_path / "raw.txt"
    src.write_text("text")
    raw = ws.commit(src, Source(name="raw")).artifact
    run = ws.record(Run(name="train", task="train-lm"), [(raw.id, "trained_on")])
    mv = ws.commit(src, ModelVersion(name="shakes", family="causal_lm"), [(run.id, "produced_by")]).artifact
    ws.catalog.set_alias("shakes", "champion", mv.id)
    ws.close()

    status = cli("-w", str(ws_dir), "status")
    assert status.code == 0
    assert "3 artifact(s)" in status.out and "shakes@champion" in status.out
    data = json.loads(cli("-w", str(ws_dir), "status", "--json").out)
    assert data["counts"] == {"source": 1, "run": 1, "model_version": 1}

    tree = cli("-w", str(ws_dir), "lineage", "shakes@champion")
    assert tree.code == 0
    assert tree.out.index("shakes@v1") < tree.out.index("train@v1") < tree.out.index("raw@v1")
    assert "produced_by" in tree.out and "trained_on" in tree.out
    nested = json.loads(cli("-w", str(ws_dir), "lineage", mv.id, "--json").out)
    assert nested["parents"][0]["parents"][0]["id"] == raw.id
    assert json.loads(cli("-w", str(ws_dir), "lineage", "shakes", "--depth", "1", "--json").out)["parents"][
        0
    ]["truncated"]

    assert cli("-w", str(ws_dir), "check").code == 0
    assert json.loads(cli("-w", str(ws_dir), "check", "--json").out)["checked"] == 2
    assert "Removed 0" in cli("-w", str(ws_dir), "gc", "--older-than", "0").out
    config = json.loads(cli("-w", str(ws_dir), "--log-level", "debug", "config", "--json").out)
    assert config["log_level"] == "DEBUG"  # the flag wins over lamina.yaml's WARNING


def test_check_fails_on_a_tampered_artifact(cli, workspace: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_text("original")
    art = workspace.commit(src, Source(name="f")).artifact
    (workspace.store.local_path(art.id) / "f.txt").write_text("tampered")  # type: ignore[operator]
    result = cli("-w", str(workspace.root), "check")
    assert result.code == 1
    assert "f.txt changed" in result.out


def test_workspace_found_from_env_and_cwd(tmp_path: Path) -> None:
    Workspace.init(tmp_path / "w")[0].close()
    (tmp_path / "w" / "sub").mkdir()
    from_cwd = run_lamina("status", "--json", cwd=tmp_path / "w" / "sub")
    assert from_cwd.returncode == 0, from_cwd.stderr
    assert json.loads(from_cwd.stdout)["workspace"] == str((tmp_path / "w").resolve())
    from_env = run_lamina("status", "--json", cwd=tmp_path, env={"LAMINA_HOME": str(tmp_path / "w")})
    assert from_env.returncode == 0 and json.loads(from_env.stdout)["workspace"] == str(
        (tmp_path / "w").resolve()
    )


@pytest.mark.parametrize(
    ("case", "exit_code", "fragments"),
    [
        ("no-workspace", 3, ["no Lamina workspace in", "fix:", "lamina init"]),
        ("bad-yaml", 2, ["invalid YAML at line 2, column 3", "lamina.yaml"]),
        ("unknown-key", 2, ["unknown setting 'catalog'", "allowed:"]),
        ("bad-env", 2, ["LAMINA_SERVER__PORT"]),
        ("corrupt-db", 3, ["corrupt or not a Lamina catalog", "fix:"]),
        ("missing-db", 3, ["has no catalog", "lamina.db is missing"]),
        ("unreachable-catalog", 4, ["cannot open the catalog at postgresql", "fix:"]),
        ("bad-ref", 2, ["cannot parse reference"]),
        ("unknown-ref", 6, ["no artifact named 'ghost'"]),
        ("bad-duration", 2, ["--older-than must be a duration"]),
    ],
)
def test_bad_input_gives_one_clear_line(
    cli, tmp_path: Path, monkeypatch, case: str, exit_code: int, fragments
) -> None:
    ws_dir = tmp_path / "w"
    monkeypatch.chdir(tmp_path)
    if case != "no-workspace":
        Workspace.init(ws_dir)[0].close()
    args = ["-w", str(ws_dir), "status"]
    if case == "no-workspace":
        args = ["status"]
    elif case == "bad-yaml":
        (ws_dir / "lamina.yaml").write_text("log_level: [INFO\n  :")
    elif case == "unknown-key":
        (ws_dir / "lamina.yaml").write_text("catalog: x\n")
    elif case == "bad-env":
        monkeypatch.setenv("LAMINA_SERVER__PORT", "eighty")
    elif case == "corrupt-db":
        (ws_dir / "lamina.db").write_bytes(b"garbage" * 1000)
        for suffix in ("-wal", "-shm"):
            (ws_dir / f"lamina.db{suffix}").unlink(missing_ok=True)
    elif case == "missing-db":
        (ws_dir / "lamina.db").unlink()
    elif case == "unreachable-catalog":
        (ws_dir / "lamina.yaml").write_text("catalog_url: postgresql+psycopg://x:y@127.0.0.1:1/db\n")
    elif case == "bad-ref":
        args = ["-w", str(ws_dir), "lineage", "not a ref"]
    elif case == "unknown-ref":
        args = ["-w", str(ws_dir), "lineage", "ghost"]
    elif case == "bad-duration":
        args = ["-w", str(ws_dir), "gc", "--older-than", "soon"]
    result = cli(*args)
    assert result.code == exit_code, result.err
    assert_one_clean_error(result.err, *fragments)
    assert result.out == ""


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    plain = run_lamina("status", cwd=tmp_path)
    assert plain.returncode == 3 and "Traceback" not in plain.stderr
    debug = run_lamina("--debug", "status", cwd=tmp_path)
    assert (
        debug.returncode == 3 and "Traceback" in debug.stderr and "error: no Lamina workspace" in debug.stderr
    )


def test_old_catalog_needs_upgrade_then_works(cli, tmp_path: Path) -> None:
    ws_dir = tmp_path / "w"
    Workspace.init(ws_dir)[0].close()
    (ws_dir / "lamina.db").unlink()
    engine = create_catalog_engine(f"sqlite:///{ws_dir / 'lamina.db'}")
    upgrade_schema(engine, "0001")  # a catalog written by an older Lamina
    engine.dispose()
    refused = cli("-w", str(ws_dir), "status")
    assert refused.code == 4
    assert_one_clean_error(refused.err, "schema revision '0001'", "lamina upgrade")
    upgraded = cli("-w", str(ws_dir), "upgrade")
    assert upgraded.code == 0 and "from schema 0001 to 0007" in upgraded.out
    assert "already at schema 0007" in cli("-w", str(ws_dir), "upgrade").out
    assert cli("-w", str(ws_dir), "status").code == 0


def test_newer_catalog_is_refused_by_every_command(cli, tmp_path: Path) -> None:
    ws_dir = tmp_path / "w"
    Workspace.init(ws_dir)[0].close()
    with sqlite3.connect(ws_dir / "lamina.db") as conn:
        conn.execute("UPDATE lamina_alembic_version SET version_num = '0099'")
    for args in (["status"], ["upgrade"], ["check"], ["lineage", "x"]):
        result = cli("-w", str(ws_dir), *args)
        assert result.code == 4, args
        assert_one_clean_error(result.err, "newer than this Lamina knows")
    assert cli("init", str(ws_dir)).code == 4


def test_read_only_artifact_folder(tmp_path: Path) -> None:
    """As an ordinary user (root ignores permissions, so root tests run the CLI as 'nobody')."""
    nobody = 65534 if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="lamina-ro-"))  # world-traversable, unlike pytest's tmp_path
    try:
        os.chmod(base, 0o777)
        ws_dir = base / "w"
        Workspace.init(ws_dir)[0].close()
        if nobody is not None:
            for path in [ws_dir, *ws_dir.rglob("*")]:
                os.chown(path, nobody, nobody)
        for path in [ws_dir / "artifacts", *(ws_dir / "artifacts").rglob("*")]:
            if path.is_dir():
                os.chmod(
                    path,
                    stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH,
                )
        result = run_lamina("quickstart", "--dir", str(ws_dir), user=nobody, env={"HOME": str(base)})
        assert result.returncode == 5, result.stderr + result.stdout
        assert_one_clean_error(result.stderr, "is not writable", "Permission denied", "fix:")
        with sqlite3.connect(ws_dir / "lamina.db") as conn:
            assert conn.execute("SELECT count(*) FROM artifacts").fetchone() == (0,)
    finally:
        for path in base.rglob("*"):
            if path.is_dir():
                os.chmod(path, 0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_json_logs_on_request(tmp_path: Path) -> None:
    result = run_lamina("--log-format", "json", "--log-level", "info", "init", str(tmp_path / "w"))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(r["msg"] == "workspace ready" and r["run_id"].startswith("cli-") for r in records)
