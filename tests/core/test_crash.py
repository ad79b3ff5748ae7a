"""Kill a process in the middle of an artifact commit and show nothing partial is visible.

A child process commits a large folder; the parent watches the store and SIGKILLs the child at
different points (early in staging, late in staging, right as the object appears). After each
kill: no catalog row without intact files, no visible partial object, a sound SQLite file, and a
workspace that keeps working.
"""

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lamina.core.catalog import Source
from lamina.core.workspace import Workspace

FILES, FILE_MB = 60, 2

CHILD = textwrap.dedent(
    """
    import sys
    from lamina.core.catalog import Source
    from lamina.core.workspace import Workspace
    ws = Workspace.open(sys.argv[1])
    print("ready", flush=True)
    ws.commit(sys.argv[2], Source(name="big"))
    print("done", flush=True)
    """
)


def staged_bytes(store_root: Path) -> int:
    return sum(p.stat().st_size for p in (store_root / ".staging").rglob("*") if p.is_file())


def committed_objects(store_root: Path) -> list[Path]:
    return [p for p in (store_root / "objects").iterdir()] if (store_root / "objects").exists() else []


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("big")
    block = bytes(range(256)) * (4096 * FILE_MB)
    for i in range(FILES):
        (folder / f"shard-{i:03d}.bin").write_bytes(block[i:] + block[:i])
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["early", "late", "at-rename"])
def test_sigkill_mid_commit_leaves_nothing_partial(tmp_path: Path, big_folder: Path, kill_at: str) -> None:
    ws, _ = Workspace.init(tmp_path / "w")
    ws.close()
    store_root = tmp_path / "w" / "artifacts"
    total = FILES * FILE_MB * 1024 * 1024
    threshold = {"early": total // 20, "late": total * 9 // 10, "at-rename": None}[kill_at]

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "w"), str(big_folder)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if threshold is not None and staged_bytes(store_root) >= threshold:
            break
        if threshold is None and committed_objects(store_root):
            break
        time.sleep(0.001)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the commit finished before the kill; make it bigger"

    # The SQLite file is sound and the workspace opens.
    with sqlite3.connect(tmp_path / "w" / "lamina.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    ws = Workspace.open(tmp_path / "w")
    rows = ws.catalog.find("source", "big")
    visible = ws.store.list_ids()
    if kill_at in ("early", "late"):
        assert rows == [] and visible == []  # staging is invisible; nothing under objects/
        assert committed_objects(store_root) == []
    # Either the whole artifact is recorded and intact, or no row points at anything.
    for row in rows:
        assert row.id in visible
        ws.store.verify(row.id)
    report = ws.check()
    assert report.ok, report.problems
    # Debris goes with gc, and the workspace keeps working.
    ws.gc(older_than_s=0)
    assert staged_bytes(store_root) == 0
    assert set(ws.store.list_ids()) == {r.id for r in rows}
    small = tmp_path / "small.txt"
    small.write_text("after the crash")
    after = ws.commit(small, Source(name="big")).artifact
    assert after.version == len(rows) + 1
    assert ws.check().ok
    ws.close()
