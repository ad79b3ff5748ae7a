"""``lamina rag ingest|search|list``: document collections for retrieval-augmented generation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from lamina.cli.parsing import json_object
from lamina.cli.render import console, print_json
from lamina.cli.state import get_state

app = typer.Typer(
    help="Document collections: ingest files, search them with access control (docs/rag.md).",
    no_args_is_help=True,
)


def _groups(value: str | None) -> list[str]:
    return [g.strip() for g in (value or "").split(",") if g.strip()]


def _ingest(ws: Any, target: Any, paths: list[str], groups: list[str], source: str | None,
            dataset: str | None, fields: dict[str, Any], settings: dict[str, Any]) -> Any:  # fmt: skip
    """One of: paths (files, folders, URLs), a data-layer source's records, a dataset version's rows."""
    from lamina.core.errors import ConfigError
    from lamina.rag import sources

    given = [bool(paths), source is not None, dataset is not None]
    if sum(given) != 1:
        raise ConfigError("give documents one way: PATHS, --source or --dataset", hint="see --help")
    if paths:
        return target.ingest(paths, groups, **settings)
    if source is not None:
        spec = json_object(source, "--source")
        documents, key = sources.from_source(spec, groups, ws.root, **fields)
    else:
        documents, key = sources.from_dataset(ws, dataset, groups, **fields)
    return target.ingest_documents(documents, [key], **settings)


def _reader(value: str | None) -> list[str] | None:
    """The groups to read as: None (no --groups) reads everything, as the workspace's owner."""
    return None if value is None else _groups(value)


def ingest(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(
        None, help="Files or folders (.txt .md .html .pdf .docx), local or on an fsspec URL (s3://…)."
    ),
    collection: str = typer.Option(..., "--collection", "-c", help="Collection name (created if new)."),
    groups: str = typer.Option(
        "", "--groups", "-g", help="Comma-separated groups that may read these documents, e.g. hr,legal."
    ),
    prune: bool = typer.Option(
        True, "--prune/--keep-missing", help="Delete documents that were under PATHS and are gone now."
    ),
    chunk_tokens: int = typer.Option(200, "--chunk-tokens", min=8, help="Tokens per chunk at most."),
    overlap: int = typer.Option(32, "--overlap", min=0, help="Tokens repeated from the previous chunk."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Embedding model: the packaged all-MiniLM-L6-v2 (default), a local sentence-transformers "
        "folder, or an imported embedding model (NAME or NAME@vN; recorded pinned to its version).",
    ),
    source: str | None = typer.Option(
        None,
        "--source",
        help='A data-layer source as JSON, one document per record, e.g. \'{"type": "sql", "url": '
        '"sqlite:///kb.db", "query": "SELECT id, body FROM articles"}\' (also http, jsonl, csv, parquet).',
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="A dataset version's rows as documents (NAME@vN)."
    ),
    text_field: str = typer.Option("text", "--text-field", help="The record field holding the text."),
    title_field: str | None = typer.Option(None, "--title-field", help="The record field holding a title."),
    id_field: str | None = typer.Option(
        None, "--id-field", help="The record field that identifies a document (default: its text's hash)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Read, chunk and embed documents into a collection; one new version, or none if nothing changed.

    Re-running is cheap: unchanged files (same content hash) are skipped, changed ones replaced, and
    files gone from the folders given are deleted (unless --keep-missing); documents ingested from
    other paths are left alone. A failure commits nothing.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lamina.rag.collection import Collection

    with get_state(ctx).open_workspace() as ws:
        target = Collection(ws, collection)
        with Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:  # fmt: skip
            task = bar.add_task("embedding", total=None)

            def advance(n: int) -> None:
                bar.update(task, advance=n)

            settings = {"prune": prune, "max_tokens": chunk_tokens, "overlap": overlap, "model": model,
                        "progress": advance}  # fmt: skip
            report = _ingest(ws, target, paths or [], _groups(groups), source, dataset,
                             {"text_field": text_field, "title_field": title_field, "id_field": id_field},
                             settings)  # fmt: skip
    version = report.version
    summary = {
        "collection": collection, "version": version.ref if version else None,
        "added": report.added, "replaced": report.replaced, "removed": report.removed,
        "unchanged": len(report.unchanged), "chunks_embedded": report.chunks,
        "chunks_total": version.meta.get("chunks") if version else 0,
    }  # fmt: skip
    if as_json:
        print_json(summary)
        return
    if not (report.added or report.replaced or report.removed):
        console.print(f"[green]✓[/] {collection}: nothing changed ({len(report.unchanged)} documents)")
        return
    console.print(
        f"[green]✓[/] {escape(version.ref if version else collection)}: {len(report.added)} added, "
        f"{len(report.replaced)} replaced, {len(report.removed)} removed, {len(report.unchanged)} unchanged; "
        f"{report.chunks} chunks embedded, {summary['chunks_total']} in the collection"
    )


def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="What to look for."),
    collection: str = typer.Option(..., "--collection", "-c", help="Collection name (NAME or NAME@vN)."),
    k: int = typer.Option(5, "-k", min=1, max=1000, help="How many chunks."),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid, dense, lexical or rrf."),
    groups: str | None = typer.Option(
        None, "--groups", "-g", help="Search as a reader of these groups only (default: everything)."
    ),
    where: str | None = typer.Option(
        None, "--where", help='Metadata filter as JSON, e.g. \'{"source": "/docs/a.md"}\'.'
    ),
    rerank: str | None = typer.Option(
        None,
        "--rerank",
        help="Re-score the top 20 with a cross-encoder: a local folder or an imported reranker.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The best chunks for QUERY, with where each comes from (document, page, span, headings)."""
    from lamina.rag.collection import Collection

    filters = json_object(where, "--where") if where else {}
    with get_state(ctx).open_workspace() as ws:
        found = Collection.open(ws, collection).search(
            query, k, groups=_reader(groups), filters=filters, mode=mode, rerank=rerank
        )
    if as_json:
        print_json([r.as_dict() for r in found])
        return
    if not found:
        console.print("No chunk matched (within the groups and filters given).")
    for rank, r in enumerate(found, start=1):
        c = r.chunk
        where_from = " › ".join(c.headings) or c.title
        page = f" p.{c.page}" if c.page else ""
        console.print(
            f"[bold]{rank}.[/] [cyan]{escape(Path(c.source).name)}{page}[/] [dim]{escape(where_from)} "
            f"· chars {c.start}–{c.end} · score {r.score:.3f} · {c.id}[/]"
        )
        console.print("   " + escape(" ".join(c.text.split())[:300]))


def ask(
    ctx: typer.Context,
    question: str = typer.Argument(..., help="The question."),
    collection: str = typer.Option(..., "--collection", "-c", help="Collection name (NAME or NAME@vN)."),
    k: int = typer.Option(3, "-k", min=1, max=50, help="How many passages to cite."),
    groups: str | None = typer.Option(
        None, "--groups", "-g", help="Answer as a reader of these groups only."
    ),
    rerank: str | None = typer.Option(
        None,
        "--rerank",
        help="Re-score the top 20 with a cross-encoder: a local folder or an imported reranker.",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Generate the answer with this model from the sources (default: extractive).",
    ),
    template: str = typer.Option("rag-answer", "--template", help="The prompt template for --model."),
    max_tokens: int = typer.Option(128, "--max-tokens", min=1, help="Tokens of a generated answer."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (answer, citations with spans)."),
) -> None:
    """An extractive answer: the sentence that answers best, highlighted in its passage, with a
    citation for every passage; "not found" when nothing retrieved is close enough to the question.
    With --model, the model writes the answer from the sources (fitted to its context), cited."""
    from lamina.rag.collection import Collection

    with get_state(ctx).open_workspace() as ws:
        if model is not None:
            generated = _generated_answer(
                ws, question, collection, k, _reader(groups), rerank, model, template, max_tokens
            )
            if as_json:
                print_json(generated)
                return
            mark = "[green]✓[/]" if generated["rag"]["grounded"] else "[yellow]?[/]"
            console.print(f"{mark} {escape(generated['answer'])}")
            for c in generated["citations"]:
                where = f"chars {c['start']}–{c['end']} · relevance {c['relevance']:.2f}"
                console.print(f"  [{c['index']}] [cyan]{escape(Path(c['document']).name)}[/] [dim]{where}[/]")
            return
        answer = Collection.open(ws, collection).ask(question, k, groups=_reader(groups), rerank=rerank)
    if as_json:
        print_json(answer.as_dict())
        return
    mark = "[green]✓[/]" if answer.grounded else "[yellow]?[/]"
    console.print(f"{mark} {escape(answer.text)}")
    for n, passage in enumerate(answer.passages, start=1):
        c, (start, end) = passage.retrieved.chunk, passage.sentence
        page = f" p.{c.page}" if c.page else ""
        text = (
            escape(c.text[:start])
            + "[bold yellow]"
            + escape(c.text[start:end])
            + "[/]"
            + escape(c.text[end:])
        )
        where = escape(" › ".join(c.headings) or c.title)
        console.print(
            f"  [{n}] [cyan]{escape(Path(c.source).name)}{page}[/] [dim]{where} · chars "
            f"{c.start + start}–{c.start + end} · relevance {passage.relevance:.2f}[/]"
        )
        console.print("      " + " ".join(text.split())[:600])


def _generated_answer(
    ws: Any, question: str, collection: str, k: int, groups: list[str] | None, rerank: str | None,
    model: str, template: str, max_tokens: int,
) -> dict[str, Any]:  # fmt: skip
    """The serving path's grounding (retrieval as the reader, "not found", sources fitted to the
    model's context), answered by this machine's engine."""
    from lamina.serving.grounding import Grounder, extractive_text
    from lamina.serving.pool import ModelPool
    from lamina.serving.protocol import ChatRequest, RagOptions
    from lamina.serving.sampling import SamplingParams
    from lamina.serving.text_service import context_budget, prompt_tokens, render_chat

    options = RagOptions(collection=collection, k=k, template=template, rerank=rerank)
    body = ChatRequest(model=model, messages=[{"role": "user", "content": question}],  # type: ignore[list-item]
                       max_tokens=max_tokens, temperature=0.0, rag=options)  # fmt: skip
    reader = None if groups is None else {"role": "user", "groups": groups}
    grounding = Grounder(ws).ground(body, reader)
    if grounding.final:
        return {"answer": extractive_text(grounding), "citations": grounding.citations, "rag": grounding.info}
    pool = ModelPool(ws)
    try:
        engine, _ = pool.engine(model)
        messages = grounding.fit(body, lambda m: prompt_tokens(engine, body, m), context_budget(body, engine))
        prompt = render_chat(engine.tokenizer, body.model_copy(update={"messages": messages}))
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        text = "".join(event.text for event in engine.submit(prompt, params).events())
    finally:
        pool.close()
    return {"answer": text, "citations": grounding.citations, "rag": grounding.info}


def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Collections and their latest versions."""
    from lamina.rag.collection import KIND

    with get_state(ctx).open_workspace() as ws:
        latest: dict[str, dict[str, Any]] = {}
        for artifact in ws.catalog.find(kind=KIND):
            row = artifact.summary()
            if row["name"] not in latest or row["version"] > latest[row["name"]]["version"]:
                latest[row["name"]] = row
        rows = sorted(latest.values(), key=lambda r: r["name"])
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No collections yet. Try 'lamina rag ingest docs/ -c docs'.")
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("collection", "documents", "chunks", "model", "created"):
        table.add_column(col)
    for r in rows:
        meta = r["meta"]
        table.add_row(r["ref"], str(len(meta.get("documents", {}))), str(meta.get("chunks")),
                      meta.get("embedding_model", "?"), str(r["created_at"])[:19])  # fmt: skip
    console.print(table)


def evaluate(
    ctx: typer.Context,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="SQuAD-format JSON (v1.1 or v2)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Score only the first N questions."),
    answers: str | None = typer.Option(
        None,
        "--answers",
        help="Also generate answers with this model and score them (citation coverage, F1).",
    ),
    answer_questions: int = typer.Option(
        50, "--answer-questions", min=1, help="How many questions to answer."
    ),
    template: str = typer.Option("rag-answer", "--template", help="The prompt template for --answers."),
    k: int = typer.Option(3, "-k", min=1, max=20, help="Sources per generated answer."),
    max_chars: int = typer.Option(600, "--max-chars", min=20, help="Characters of each source shown."),
    max_tokens: int = typer.Option(32, "--max-tokens", min=1, help="Tokens per generated answer."),
    url: str | None = typer.Option(
        None, "--url", help="Generate through a Lamina server instead of locally."
    ),
    key: str | None = typer.Option(None, "--key", envvar="LAMINA_API_KEY", help="API key for --url."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Retrieval quality on FILE: recall@1..10, MRR, nDCG@10 for lexical, dense, RRF and hybrid;
    with --answers, the generated answers' citation coverage (the share of their sentences a shown
    source supports), how often the sources hold the gold answer, and token F1.

    Every paragraph becomes a document in a scratch index (nothing is added to the workspace); a
    question counts as found at rank r when its own paragraph is the r-th document retrieved.
    """
    import shutil
    import tempfile

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lamina.rag.embeddings import Embedder
    from lamina.rag.evaluate import build_store, load_squad, rank, score

    documents, questions = load_squad(file)
    questions = questions[:limit] if limit else questions
    embedder = Embedder()
    scratch = Path(tempfile.mkdtemp(prefix="lamina-rag-eval-"))
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            indexing = bar.add_task("indexing paragraphs", total=None)
            store = build_store(
                documents, embedder, scratch, progress=lambda n: bar.update(indexing, advance=n)
            )
            asking = bar.add_task("asking questions", total=len(questions))
            rankings = rank(store, embedder, questions, progress=lambda n: bar.update(asking, advance=n))
        scores: dict[str, Any] = dict(score(rankings))
        if answers:
            scores["answers"] = _answer_quality(ctx, store, embedder, questions[:answer_questions], answers,
                                                template, url, key, k=k, max_chars=max_chars,
                                                max_tokens=max_tokens)  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if as_json:
        print_json(scores)
        return
    quality = scores.pop("answers", None)
    table = Table(
        show_edge=False, header_style="bold", title=f"{len(questions)} questions, {len(documents)} paragraphs"
    )
    table.add_column("retrieval")
    for k in (1, 3, 5, 10):
        table.add_column(f"R@{k}", justify="right")
    table.add_column("MRR", justify="right")
    table.add_column("nDCG@10", justify="right")
    for mode, s in scores.items():
        table.add_row(mode, *(f"{s[f'recall@{k}']:.3f}" for k in (1, 3, 5, 10)), f"{s['mrr']:.3f}",
                      f"{s['ndcg@10']:.3f}")  # fmt: skip
    console.print(table)
    console.print("[dim]recall at every k from 1 to 10: --json[/]")
    if quality is not None:
        console.print(
            f"Generated answers ({quality['model']}, {quality['template']}): {quality['answered']} of "
            f"{quality['questions']} answered; citation coverage {quality['citation_coverage']:.3f}, "
            f"gold answer in the sources {quality['answer_in_sources']:.3f}, "
            f"token F1 {quality['answer_f1']:.3f}"
        )
        for error in quality["errors"]:
            console.print(f"  [yellow]not answered:[/] {escape(error)}")


def _answer_quality(
    ctx: typer.Context, store: Any, embedder: Any, questions: list[Any], model: str, template: str,
    url: str | None, key: str | None, **options: Any,
) -> dict[str, Any]:  # fmt: skip
    from lamina.cli import generators
    from lamina.rag import prompts
    from lamina.rag.evaluate import answer_quality

    with get_state(ctx).open_workspace() as ws:
        generate, close = generators.remote(url, key) if url else generators.local(ws)
        try:
            return answer_quality(store, embedder, questions, generate, model, prompts.load(ws, template),
                                  **options)  # fmt: skip
        finally:
            close()


app.command("ingest")(ingest)
app.command("search")(search)
app.command("ask")(ask)
app.command("list")(list_cmd)
app.command("eval")(evaluate)
