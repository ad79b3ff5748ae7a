import io
import json
import logging

from lamina.core.logging import configure_logging, request_id_var, run_id_var


def test_json_lines_carry_run_and_request_ids() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    run_token, req_token = run_id_var.set("cli-abc"), request_id_var.set("req-1")
    try:
        logging.getLogger("lamina.test").info("hello", extra={"artifact_id": "ds-1"})
        logging.getLogger("lamina.test").debug("hidden at INFO")
    finally:
        run_id_var.reset(run_token)
        request_id_var.reset(req_token)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["msg"] == "hello"
    assert record["level"] == "INFO"
    assert (record["run_id"], record["request_id"], record["artifact_id"]) == ("cli-abc", "req-1", "ds-1")


def test_human_format_and_reconfiguration() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=io.StringIO())
    configure_logging("DEBUG", "human", stream=stream)  # replaces, does not add, a handler
    token = run_id_var.set("cli-xyz")
    try:
        logging.getLogger("lamina.test").debug("step done", extra={"rows": 3})
    finally:
        run_id_var.reset(token)
    line = stream.getvalue().strip()
    assert "DEBUG" in line and "[cli-xyz]" in line and "step done" in line and "rows=3" in line
    assert len([h for h in logging.getLogger("lamina").handlers if getattr(h, "_lamina", False)]) == 1
