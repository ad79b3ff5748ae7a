"""Service KPIs from the audit log and feedback: buckets, quantiles, rates, per-key tokens and cost,
the HTML report with its plots, and ``lamina monitor report``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lamina.core.catalog.models import ApiKey, AuditEvent, Feedback
from lamina.core.workspace import Workspace

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def seed(ws: Workspace, now: datetime = NOW) -> None:
    """Two hours of traffic: hour 1 fast and clean, hour 2 slower with errors, rail blocks, thumbs."""
    with ws.catalog.session() as session:
        session.add(ApiKey(id="key-a", name="app", role="user", key_hash="h", prefix="lam-a"))
        rows = []
        for i in range(20):  # hour 1: 20 requests, 100 ms, 10 + 5 tokens
            rows.append(AuditEvent(at=now - timedelta(minutes=110 - i), request_id=f"a{i}", key_id="key-a",
                                   method="POST", route="/v1/chat/completions", status_code=200,
                                   latency_ms=100.0, tokens_in=10, tokens_out=5, detail={}))  # fmt: skip
        for i in range(10):  # hour 2: 10 requests, 300 ms, 2 blocked (400), 1 failed (500)
            status = 400 if i < 2 else 500 if i == 2 else 200
            detail = {"rails": [{"rail": "injection", "action": "block"}]} if i < 2 else {}
            rows.append(AuditEvent(at=now - timedelta(minutes=50 - i), request_id=f"b{i}", key_id=None,
                                   method="POST", route="/v1/chat/completions", status_code=status,
                                   latency_ms=300.0, tokens_in=20, tokens_out=0, detail=detail))  # fmt: skip
        rows.append(AuditEvent(at=now - timedelta(minutes=30), request_id="m", method="GET", route="/metrics",
                               status_code=200, detail={}))  # not a served request  # fmt: skip
        rows.append(AuditEvent(at=now - timedelta(hours=5), request_id="old", method="POST",
                               route="/v1/completions", status_code=200, detail={}))  # outside  # fmt: skip
        session.add_all(rows)
        votes = [("b5", "thumbs_up", 40), ("b6", "thumbs_down", 39), ("b7", "thumbs_down", 38)]
        session.add_all([Feedback(at=now - timedelta(minutes=ago), request_id=rid, label=label)
                         for rid, label, ago in votes])  # fmt: skip


def test_kpis_bucket_the_audit_log_and_feedback(workspace: Workspace, tmp_path: Path) -> None:
    from lamina.monitoring.kpis import collect
    from lamina.monitoring.report import write

    seed(workspace)
    series = collect(workspace, timedelta(hours=2), timedelta(hours=1), now=NOW, price_per_1k_tokens=2.0)
    assert series.requests == [20, 10] and series.client_errors == [0, 2] and series.server_errors == [0, 1]
    assert series.latency_p50_ms == [100.0, 300.0]  # errors are not in the latency of answers
    assert series.tokens_in == [200, 200] and series.tokens_out == [100, 0]
    assert series.rails == {"block": [0, 2]}
    assert series.thumbs_up_rate() == [None, 1 / 3]
    totals = series.totals()
    assert totals["requests"] == 30 and abs(totals["error_rate"] - 0.1) < 1e-9
    assert series.per_key["app"] == {"requests": 20, "errors": 0, "tokens_in": 200, "tokens_out": 100,
                                     "cost": 0.6}  # fmt: skip
    assert series.per_key["(server admin key)"]["requests"] == 10
    page, data = write(series, tmp_path / "report")
    text = page.read_text()
    assert "data:image/png;base64," in text and "<td>app</td>" in text and "33% up" in text
    assert json.loads(data.read_text())["totals"]["thumbs_down"] == 2


def test_monitor_report_command_and_a_bad_window(cli, workspace: Workspace, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    seed(workspace)
    bad = cli("--workspace", str(workspace.root), "monitor", "report", "--since", "yesterday")
    assert bad.code == 2 and "--since must be a duration" in bad.err
    made = cli("--workspace", str(workspace.root), "monitor", "report", "--since", "7d", "--out",
               str(tmp_path / "m"), "--json")  # fmt: skip
    assert made.code == 0, made.err
    report = json.loads(made.out)
    assert report["totals"]["requests"] == 31  # 30 recent + the one five hours old; /metrics is not served
    assert (tmp_path / "m" / "monitor.html").stat().st_size > 10_000  # the plots are in it


def test_alert_rules_fire_to_the_log_and_a_real_webhook(cli, workspace: Workspace, caplog) -> None:  # type: ignore[no-untyped-def]
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None: ...

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    seed(workspace, datetime.now(UTC))
    url = f"http://127.0.0.1:{hook.server_address[1]}/alerts"
    (workspace.root / "lamina.yaml").write_text(json.dumps({"monitoring": {"alerts": [
        {"name": "errors", "metric": "error_rate", "op": ">", "threshold": 0.2, "window": "1h",
         "webhook": url},
        {"name": "slow", "metric": "latency_p95_ms", "op": ">", "threshold": 1000, "window": "1h"},
        {"name": "unhappy", "metric": "thumbs_up_rate", "op": "<", "threshold": 0.5, "window": "1h",
         "min_requests": 100},
    ]}}))  # fmt: skip
    try:
        made = cli("--workspace", str(workspace.root), "monitor", "check", "--json")
    finally:
        hook.shutdown()
    assert made.code == 1, made.err  # something fired
    results = {r["rule"]: r for r in json.loads(made.out)}
    assert results["errors"]["fired"] and abs(results["errors"]["value"] - 0.3) < 1e-9  # 3 of 10
    assert not results["slow"]["fired"] and results["slow"]["value"] == 300.0
    assert not results["unhappy"]["fired"]  # 1 of 3 thumbs up, but only 10 requests: too little evidence
    assert [r["rule"] for r in received] == ["errors"] and received[0]["event"] == "alert"
    assert any("alert errors" in r.getMessage() for r in caplog.records)
    (workspace.root / "lamina.yaml").write_text(json.dumps({"monitoring": {"alerts": [{"metric": "mood"}]}}))
    bad = cli("--workspace", str(workspace.root), "monitor", "check")
    assert bad.code == 2 and "metric 'mood' is not one of" in bad.err
