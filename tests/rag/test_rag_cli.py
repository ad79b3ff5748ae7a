"""``lamina rag``: ingest, search with groups and filters, list, eval, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from lamina.core.workspace import Workspace


def test_ingest_search_list_through_the_cli(cli, workspace: Workspace, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    ws = str(workspace.root)
    made = cli("--workspace", ws, "rag", "ingest", str(corpus), "-c", "handbook", "-g", "staff", "--json")
    assert made.code == 0, made.err
    summary = json.loads(made.out)
    assert summary["version"] == "handbook@v1" and len(summary["added"]) == 5 and summary["chunks_total"] > 5
    again = cli("--workspace", ws, "rag", "ingest", str(corpus), "-c", "handbook", "-g", "staff")
    assert again.code == 0 and "nothing changed" in again.out

    found = cli(
        "--workspace", ws, "rag", "search", "nightly hotel limit in Paris", "-c", "handbook", "--json"
    )
    hits = json.loads(found.out)
    assert "240 euros" in hits[0]["text"] and hits[0]["headings"] == ["Travel policy", "Hotels"]
    assert hits[0]["document"].endswith("travel.md") and hits[0]["start"] < hits[0]["end"]
    outsider = cli("--workspace", ws, "rag", "search", "hotel", "-c", "handbook", "-g", "finance", "--json")
    assert json.loads(outsider.out) == []
    shown = cli("--workspace", ws, "rag", "search", "hotel", "-c", "handbook")
    assert "travel.md" in shown.out and "Hotels" in shown.out

    listed = json.loads(cli("--workspace", ws, "rag", "list", "--json").out)
    assert [r["ref"] for r in listed] == ["handbook@v1"]

    unknown = cli("--workspace", ws, "rag", "search", "x", "-c", "nope")
    assert unknown.code != 0 and "no collection 'nope'" in unknown.err
    bad_filter = cli("--workspace", ws, "rag", "search", "x", "-c", "handbook", "--where", '{"author": "me"}')
    assert bad_filter.code == 2 and "cannot filter on 'author'" in bad_filter.err
    missing = cli("--workspace", ws, "rag", "ingest", str(corpus / "none"), "-c", "handbook")
    assert missing.code == 2 and "does not exist" in missing.err


def test_eval_scores_every_mode_on_squad_format_data(cli, workspace: Workspace, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    facts = {
        "Volcanoes": ["Mount Etna is an active volcano on Sicily.", "Lava cools into basalt rock."],
        "Rivers": ["The Danube flows through ten countries.", "The Nile is the longest river in Africa."],
    }
    questions = {
        "Mount Etna is an active volcano on Sicily.": "Which volcano is active on Sicily?",
        "Lava cools into basalt rock.": "What rock does cooled lava form?",
        "The Danube flows through ten countries.": "How many countries does the Danube cross?",
        "The Nile is the longest river in Africa.": "What is Africa's longest river?",
    }
    data = {"data": [
        {"title": title, "paragraphs": [{"context": p, "qas": [{"id": p[:5], "question": questions[p],
                                                               "answers": []}]} for p in paragraphs]}
        for title, paragraphs in facts.items()
    ]}  # fmt: skip
    path = tmp_path / "mini-squad.json"
    path.write_text(json.dumps(data))
    result = cli("--workspace", str(workspace.root), "rag", "eval", str(path), "--json")
    assert result.code == 0, result.err
    scores = json.loads(result.out)
    assert set(scores) == {"lexical", "dense", "rrf", "hybrid"}
    assert scores["hybrid"]["recall@1"] >= 0.75 and scores["hybrid"]["recall@10"] == 1.0
    assert all(0 <= s["mrr"] <= 1 and s["questions"] == 4 for s in scores.values())
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    bad = cli("--workspace", str(workspace.root), "rag", "eval", str(broken))
    assert bad.code == 2 and "not a SQuAD-format JSON" in bad.err


def test_ask_answers_with_a_highlighted_citation_or_says_not_found(
    cli, workspace: Workspace, corpus: Path
) -> None:  # type: ignore[no-untyped-def]
    ws = str(workspace.root)
    assert cli("--workspace", ws, "rag", "ingest", str(corpus), "-c", "handbook", "-g", "staff").code == 0
    asked = cli("--workspace", ws, "rag", "ask", "How long must passwords be?", "-c", "handbook", "--json")
    answer = json.loads(asked.out)
    assert answer["grounded"] and "fourteen characters" in answer["answer"]
    top = answer["citations"][0]
    assert top["document"].endswith("security.docx") and top["highlight"]["text"] == answer["answer"]
    assert top["text"][top["highlight"]["start"] : top["highlight"]["end"]] == answer["answer"]

    unrelated = cli("--workspace", ws, "rag", "ask", "Who won the 1998 football world cup?", "-c", "handbook",
                    "--json")  # fmt: skip
    assert json.loads(unrelated.out)["grounded"] is False
    question = "How long must passwords be?"
    outsider = cli("--workspace", ws, "rag", "ask", question, "-c", "handbook", "-g", "hr", "--json")
    refused = json.loads(outsider.out)
    assert refused["grounded"] is False and refused["citations"] == []
    shown = cli("--workspace", ws, "rag", "ask", "How long must passwords be?", "-c", "handbook")
    assert "fourteen" in shown.out and "security.docx" in shown.out


def test_citation_coverage_counts_the_answer_sentences_a_source_supports() -> None:
    from lamina.rag.embeddings import Embedder
    from lamina.rag.evaluate import supported, token_f1

    embedder = Embedder()
    sources = ["The nightly hotel limit in Paris is 240 euros. Meals are paid up to 60 euros."]
    assert supported("The nightly hotel limit in Paris is 240 euros.", sources, embedder) == 1.0
    half = "The hotel limit in Paris is 240 euros a night. Penguins cannot fly over the Andes."
    assert supported(half, sources, embedder) == 0.5
    assert supported("", sources, embedder) == 0.0
    assert token_f1("240 euros", "240 euros") == 1.0 and token_f1("about 240", "240 euros") == 0.5
