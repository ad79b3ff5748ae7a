"""The ``rag`` extension of chat: retrieve as the caller, decide whether there is anything to answer
from, and either answer (extractive, or "not found") or hand the model a prompt with the sources.

The caller's groups come from its API key (the gateway puts them on the request): an admin key
reads every group, any other key exactly its own, and the store applies them inside the query.
Without the gateway (tests, ``create_app(gateway=False)``) there is no caller to restrict.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lamina.core.errors import ConfigError
from lamina.core.workspace import Workspace
from lamina.rag import prompts
from lamina.rag.answer import MIN_RELEVANCE, Answer, extractive
from lamina.rag.collection import Collection
from lamina.serving.protocol import ChatMessage, ChatRequest, RagOptions

COLLECTION_TTL_S = 2.0  # a new collection version is seen within this long (as model aliases are)


class ContextTooSmall(ConfigError):
    http_status = 400
    code = "context_length_exceeded"


@dataclass
class Grounding:
    answer: Answer
    citations: list[dict[str, Any]]
    info: dict[str, Any]  # what the response says about how it was grounded
    template: prompts.Template | None = None  # generate mode, when there is something to answer from
    question_at: int = 0  # the message the question is in

    @property
    def final(self) -> bool:
        """Whether this is the whole answer (extractive mode, or nothing to answer from)."""
        return self.template is None

    def messages(self, body: ChatRequest, sources: list[dict[str, Any]]) -> list[ChatMessage]:
        """The conversation with the question replaced by the template's prompt over ``sources``."""
        assert self.template is not None
        question = body.messages[self.question_at].text()
        messages = list(body.messages)
        messages[self.question_at] = ChatMessage(
            role="user", content=self.template.render(question=question, sources=sources)
        )
        return messages

    def fit(
        self, body: ChatRequest, measure: Callable[[list[ChatMessage]], int], budget: int
    ) -> list[ChatMessage]:
        """The prompt with as many sources as fit in ``budget`` tokens (best first), the last one cut
        short when even it alone does not fit; the citations keep only the sources the model saw.

        Small models have small contexts (the quickstart's is 64 tokens): a prompt that does not fit
        would be refused whole, so the sources are fitted to the model instead.
        """
        sources = [
            {"title": c["title"], "page": c["page"], "text": c["text"], "document": c["document"]}
            for c in self.citations
        ]
        for n in range(len(sources), 0, -1):
            messages = self.messages(body, sources[:n])
            if measure(messages) <= budget:
                self.citations = self.citations[:n]
                return messages
        text, low, high = sources[0]["text"], 0, len(sources[0]["text"])
        while low < high:  # the longest prefix of the best source that fits
            middle = (low + high + 1) // 2
            if measure(self.messages(body, [{**sources[0], "text": text[:middle] + "…"}])) <= budget:
                low = middle
            else:
                high = middle - 1
        if low == 0:
            raise ContextTooSmall(
                f"the question and template {self.template.ref if self.template else ''} leave no room "
                f"for a source in this model's context",
                hint='use "answer": "extractive", a shorter template, or a model with a longer context',
            )
        self.citations = [{**self.citations[0], "shown_chars": low}]
        return self.messages(body, [{**sources[0], "text": text[:low] + "…"}])


def reader_groups(principal: dict[str, Any] | None) -> list[str] | None:
    """The groups a caller reads as: None (every group) for admins and callers without a key."""
    if principal is None or principal.get("role") == "admin":
        return None
    return list(principal.get("groups") or [])


def question_of(body: ChatRequest) -> tuple[int, str]:
    """The last user message (its index and text): what retrieval searches for."""
    for index in range(len(body.messages) - 1, -1, -1):
        if body.messages[index].role == "user" and body.messages[index].text().strip():
            return index, body.messages[index].text()
    raise ConfigError("a rag request needs a user message to answer", hint="end messages with the question")


class Grounder:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._open: dict[str, tuple[float, Collection]] = {}
        self._lock = threading.Lock()

    def collection(self, name: str) -> Collection:
        with self._lock:
            hit = self._open.get(name)
            if hit is not None and time.monotonic() - hit[0] < COLLECTION_TTL_S:
                return hit[1]
        opened = Collection.open(self.ws, name)
        if hit is not None and opened.committed is not None and hit[1].committed is not None \
                and opened.committed.id == hit[1].committed.id:  # fmt: skip
            opened = hit[1]  # the same version: keep the open store and embedder
        with self._lock:
            self._open[name] = (time.monotonic(), opened)
        return opened

    def ground(self, body: ChatRequest, principal: dict[str, Any] | None) -> Grounding:
        """Blocking (retrieval and embedding): call it in a worker thread."""
        options: RagOptions = body.rag  # type: ignore[assignment]
        at, question = question_of(body)
        collection = self.collection(options.collection)
        template = prompts.load(self.ws, options.template) if options.answer == "generate" else None
        if options.rerank is not None and ("/" in options.rerank or options.rerank.startswith(".")):
            raise ConfigError(
                "rag.rerank takes an imported reranker model (NAME or NAME@vN), not a path",
                hint="lamina models import CROSS_ENCODER_FOLDER --name NAME",
            )
        retrieved = collection.search(
            question, options.k, groups=reader_groups(principal), filters=options.filters, mode=options.mode,
            rerank=options.rerank,
        )  # fmt: skip
        threshold = MIN_RELEVANCE if options.min_relevance is None else options.min_relevance
        answer = extractive(question, retrieved, collection.embedder, threshold)
        assert collection.committed is not None
        info: dict[str, Any] = {
            "collection": collection.committed.ref, "mode": options.mode, "answer": options.answer,
            "grounded": answer.grounded, "template": template.ref if template else None,
            "best_relevance": round(answer.passages[0].relevance, 4) if answer.passages else None,
        }  # fmt: skip
        if not answer.grounded:
            return Grounding(answer, [], info)
        citations = [{"index": i + 1, **p.as_dict()} for i, p in enumerate(answer.passages)]
        return Grounding(answer, citations, info, template, at)


def extractive_text(grounding: Grounding) -> str:
    """The answer content without a model: the best sentence and its citation mark, or why none."""
    return f"{grounding.answer.text} [1]" if grounding.answer.grounded else grounding.answer.text
