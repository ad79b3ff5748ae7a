import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lamina.core.errors import ConfigError
from lamina.data.records import DataError, ErrorLog
from lamina.data.sources import infer_type, make_source
from tests.data.conftest import write_png, write_wav


def read_all(spec, policy="fail", base=None):
    errors = ErrorLog(policy)
    rows = [r for batch in make_source(spec, base).batches(errors, batch_size=7) for r in batch]
    return rows, errors


def test_text_markdown_and_html(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("First para\nline two\n\nSecond para\n")
    (tmp_path / "b.md").write_text("# Title\n\nBody text")
    (tmp_path / "c.html").write_text(
        "<html><head><style>x{}</style><script>evil()</script></head>"
        "<body><h1>Head</h1><p>Visible <b>text</b></p></body></html>"
    )
    rows, _ = read_all(str(tmp_path))
    texts = [r["text"] for r in rows]
    assert "First para\nline two" in texts and "Second para" in texts and "Body text" in texts
    html_text = " ".join(r["text"] for r in rows if r["_origin"].startswith("c.html"))
    assert (
        "Visible" in html_text and "Head" in html_text and "evil" not in html_text and "x{}" not in html_text
    )
    lines, _ = read_all({"type": "text", "path": str(tmp_path / "a.txt"), "split_by": "line"})
    assert [r["text"] for r in lines] == ["First para", "line two", "Second para"]
    assert [r["_origin"] for r in lines] == ["a.txt:1", "a.txt:2", "a.txt:4"]


def test_jsonl_bad_records_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": broken\n[1, 2]\n{"text": "\xff\xfe"}\n\n{"text": "fine"}\n')
    with pytest.raises(DataError, match=r"d.jsonl line 2: invalid JSON"):
        read_all(str(path))
    rows, errors = read_all(str(path), "skip")
    assert [r["text"] for r in rows] == ["ok", "fine"]
    assert errors.count == 3
    assert errors.by_kind == {"invalid JSON": 1, "wrong schema": 1, "bad encoding": 1}
    assert [e["where"] for e in errors.examples] == ["d.jsonl line 2", "d.jsonl line 3", "d.jsonl line 4"]


def test_csv_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("text,label\nhello,1\n,2\ntoo,many,fields\n")
    with pytest.raises(DataError, match=r"t.csv line 4: wrong schema: expected 2 fields, got 3"):
        read_all(str(tmp_path / "t.csv"))
    rows, errors = read_all(str(tmp_path / "t.csv"), "skip")
    assert [(r["text"], r["label"]) for r in rows] == [("hello", "1"), (None, "2")]
    pq.write_table(pa.table({"text": ["a", "b"], "n": [1, 2]}), tmp_path / "t.parquet")
    rows, _ = read_all(str(tmp_path / "t.parquet"))
    assert [(r["text"], r["n"]) for r in rows] == [("a", 1), ("b", 2)]


def test_image_folder_labels_and_truncated_files(tmp_path: Path) -> None:
    write_png(tmp_path / "cat" / "1.png", 10)
    write_png(tmp_path / "dog" / "2.png", 200)
    data = (tmp_path / "dog" / "2.png").read_bytes()
    (tmp_path / "dog" / "3.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="3.png: unreadable image"):
        read_all(str(tmp_path))
    rows, errors = read_all(str(tmp_path), "skip")
    assert sorted(r["label"] for r in rows) == ["cat", "dog"]
    assert rows[0]["width"] == 12 and rows[0]["height"] == 10 and errors.count == 1


def test_mnist_idx(shared_data: Path, tmp_path: Path) -> None:
    images = shared_data / "images" / "mnist" / "t10k-images-idx3-ubyte.gz"
    labels = shared_data / "images" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    spec = {"path": str(images), "labels": str(labels)}
    assert make_source(spec).type == "idx"
    first = next(make_source(spec).batches(ErrorLog(), batch_size=5))
    assert [r["label"] for r in first] == [7, 2, 1, 0, 4]  # the well-known first MNIST test labels
    assert (first[0]["width"], first[0]["height"], first[0]["mode"]) == (28, 28, "L")
    import gzip

    raw = gzip.decompress(images.read_bytes())[: 16 + 28 * 28 * 3 + 100]  # 3 images and a half
    (tmp_path / "cut-idx3-ubyte").write_bytes(raw)
    with pytest.raises(DataError, match=r"image 3 \(byte 2368\).*truncated image"):
        read_all({"type": "idx", "path": str(tmp_path / "cut-idx3-ubyte")})
    rows, errors = read_all({"type": "idx", "path": str(tmp_path / "cut-idx3-ubyte")}, "skip")
    assert len(rows) == 3 and errors.count == 1


def test_wav_folder(tmp_path: Path) -> None:
    write_wav(tmp_path / "yes" / "a.wav", seconds=0.25)
    data = write_wav(tmp_path / "no" / "b.wav").read_bytes()
    (tmp_path / "no" / "c.wav").write_bytes(data[:2000])
    rows, errors = read_all(str(tmp_path), "skip")
    assert [(r["label"], r["sample_rate"], round(r["duration_s"], 2)) for r in rows] == [
        ("no", 16000, 0.5),
        ("yes", 16000, 0.25),
    ]
    assert errors.by_kind == {"unreadable audio": 1}


def test_sql_source_on_sqlite(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "src.db") as conn:
        conn.execute("CREATE TABLE docs (id INTEGER, body TEXT)")
        conn.executemany("INSERT INTO docs VALUES (?, ?)", [(i, f"doc {i}") for i in range(20)])
    rows, _ = read_all(
        {
            "type": "sql",
            "url": "sqlite:///src.db",
            "query": "SELECT id, body AS text FROM docs WHERE id < 15",
        },
        base=tmp_path,
    )
    assert [r["text"] for r in rows] == [f"doc {i}" for i in range(15)]
    with pytest.raises(DataError, match="SQL source failed"):
        read_all({"type": "sql", "url": "sqlite:///src.db", "query": "SELECT nope FROM docs"}, base=tmp_path)


@pytest.mark.postgres
def test_sql_source_on_postgres(postgres_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE docs (id INT, text TEXT, at TIMESTAMPTZ DEFAULT now())"))
        conn.execute(
            sa.text("INSERT INTO docs (id, text) SELECT g, 'row ' || g FROM generate_series(1, 2500) g")
        )
    engine.dispose()
    rows, _ = read_all({"type": "sql", "url": postgres_url, "query": "SELECT * FROM docs ORDER BY id"})
    assert len(rows) == 2500 and rows[-1]["text"] == "row 2500" and isinstance(rows[0]["at"], str)


@pytest.mark.s3
def test_jsonl_on_s3(s3_location) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**{k: v for k, v in s3_location.options.items()})
    fs.pipe(f"{s3_location.bucket}/in/data.jsonl", b'{"text": "from s3"}\n{"text": "again"}\n')
    rows, _ = read_all(
        {"path": f"s3://{s3_location.bucket}/in/data.jsonl", "storage_options": s3_location.options}
    )
    assert [r["text"] for r in rows] == ["from s3", "again"]


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        query = parse_qs(urlparse(self.path).query)
        if self.path.startswith("/cursor"):
            start = int(query.get("after", ["0"])[0])
            items = [{"text": f"item {i}"} for i in range(start, min(start + 4, 10))]
            body = {
                "data": {"items": items},
                "next": f"/cursor?after={start + 4}" if start + 4 < 10 else None,
            }
        else:
            page = int(query.get("page", ["1"])[0])
            body = {"items": [{"text": f"p{page}-{i}"} for i in range(3)] if page <= 3 else []}
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def test_http_json_api_with_pagination() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        rows, _ = read_all({"type": "http", "url": f"{base}/pages"})
        assert len(rows) == 9 and rows[0]["text"] == "p1-0" and rows[-1]["text"] == "p3-2"
        rows, _ = read_all(
            {
                "type": "http",
                "url": f"{base}/cursor?after=0",
                "items_field": "data.items",
                "next_field": "next",
            }
        )
        assert [r["text"] for r in rows] == [f"item {i}" for i in range(10)]
        with pytest.raises(DataError, match="HTTP source"):
            read_all({"type": "http", "url": "http://127.0.0.1:1/nothing", "timeout_s": 2})
    finally:
        server.shutdown()


def test_type_inference_and_bad_specs(tmp_path: Path) -> None:
    assert infer_type("x/train-images-idx3-ubyte.gz") == "idx"
    assert infer_type("a.ndjson") == "jsonl" and infer_type("a.tsv") == "csv"
    (tmp_path / "mystery.bin").write_bytes(b"\0")
    with pytest.raises(DataError, match="cannot tell what kind"):
        make_source(str(tmp_path / "mystery.bin"))
    with pytest.raises(ConfigError, match="unknown source type 'ftp'"):
        make_source({"type": "ftp", "path": "x"})
    with pytest.raises(ConfigError, match="invalid csv source: nope"):
        make_source({"type": "csv", "path": "x.csv", "nope": 1})
    with pytest.raises(DataError, match="does not exist"):
        read_all(str(tmp_path / "missing.jsonl"))
