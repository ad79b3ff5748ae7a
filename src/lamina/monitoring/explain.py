"""Why a served text answer came out as it did (``lamina explain REQUEST_ID``): for the request's
prompt and answer as the audit record kept them, and the model version that answered,

- **token attributions**: gradient × input of each prompt token's embedding, for the whole answer
  (the sum of its tokens' log-probabilities) and for each of its first tokens: which words of the
  prompt the answer leaned on;
- **alternatives**: at every answer token, its probability and the model's top-k other choices;
- **citations**: the RAG sources the answer was given (from the audit record).

Gradient × input is written here (a few lines on the embeddings) rather than taken from captum:
captum is not installed here and its LLM attribution wraps the same product; Lamina's models are
plain transformers ``LlamaForCausalLM``s, so the embedding gradient is all it needs.
The answer is re-scored, not re-generated: the model reads prompt + answer once (teacher forcing).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lamina.core.errors import LaminaError, NotFound
from lamina.core.workspace import Workspace


@dataclass
class Explanation:
    request_id: str
    model: str
    prompt_tokens: list[str]
    answer_tokens: list[str]
    attribution: list[float]  # per prompt token, for the whole answer (normalised to max |a| = 1)
    per_token: list[list[float]]  # per answer token (the first ``per_token_limit``), per prompt token
    steps: list[dict[str, Any]] = field(default_factory=list)  # per answer token: p and alternatives
    citations: list[dict[str, Any]] = field(default_factory=list)
    answer_logprob: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class NotExplainable(LaminaError):
    http_status = 409
    code = "not_explainable"


def explain(
    ws: Workspace, cipher: Any, request_id: str, *, top_k: int = 5, per_token_limit: int = 16
) -> Explanation:
    """Explain the answer of ``request_id`` (a chat or completion request whose text was kept)."""
    from lamina.core.catalog.models import ModelVersion
    from lamina.monitoring.review import audit_row, messages_of

    with ws.catalog.session() as session:
        row = audit_row(session, request_id)
        if row is None:
            raise NotFound(f"no request {request_id!r} in the audit log", hint="see `lamina audit list`")
        if row.request_text and row.response_text == "":
            raise NotExplainable(f"the answer of {request_id} was empty: there is nothing to explain")
        if not row.request_text or row.response_text is None:
            raise NotExplainable(f"the text of {request_id} was not kept",
                                 hint="serve with server.audit_text: true to explain answers")  # fmt: skip
        if cipher is None:
            raise NotExplainable("the audit text is encrypted and no key is set",
                                 hint="set LAMINA_SECURITY__ENCRYPTION_KEYS")  # fmt: skip
        request_text, answer = cipher.decrypt(row.request_text), cipher.decrypt(row.response_text)
        version = session.get(ModelVersion, row.model_version_id) if row.model_version_id else None
        citations = list((row.detail or {}).get("citations", []))
        body = json.loads(request_text) if request_text.startswith("{") else {}
    if version is None and citations:  # an extractive RAG answer: sentences of the sources, no model
        return Explanation(request_id, "extractive (quoted from the sources, no model)", [], [], [], [],
                           citations=citations)  # fmt: skip
    if version is None or version.family != "causal_lm":
        raise NotExplainable(f"{request_id} was not answered by a text model of this workspace")
    messages = messages_of(request_text)
    if messages is None:
        raise NotExplainable(f"the stored request of {request_id} is not a chat or completion request")
    return _attribute(ws, version, messages, "prompt" in body, answer, request_id, citations, top_k,
                      per_token_limit)  # fmt: skip


def _attribute(
    ws: Workspace,
    version: Any,
    messages: list[dict[str, Any]],
    completion: bool,
    answer: str,
    request_id: str,
    citations: list[dict[str, Any]],
    top_k: int,
    per_token_limit: int,
) -> Explanation:
    import torch

    from lamina.hub.registry import model_path
    from lamina.serving.engine import encode
    from lamina.training.sft import ensure_chat_template, load_any

    model, tokenizer = load_any(model_path(ws, version))
    ensure_chat_template(tokenizer)
    model.eval()
    # the prompt's token ids as the server made them (lamina.serving.engine.encode)
    text = messages[0]["content"] if completion else tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )  # fmt: skip
    prompt_ids = encode(tokenizer, str(text))
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    context = int(model.config.max_position_embeddings)
    if not answer_ids:
        raise NotExplainable(f"the answer of {request_id} is empty")
    ids = (list(prompt_ids) + list(answer_ids))[-context:]
    n_prompt = max(0, len(ids) - len(answer_ids))
    embed = model.get_input_embeddings()
    inputs = embed(torch.tensor([ids])).detach().requires_grad_(True)
    logits = model(inputs_embeds=inputs).logits[0].float()
    logprobs = torch.log_softmax(logits[n_prompt - 1 : len(ids) - 1], dim=-1)
    targets = torch.tensor(ids[n_prompt:])
    chosen = logprobs.gather(1, targets[:, None])[:, 0]

    def grad_x_input(score: torch.Tensor) -> list[float]:
        (grad,) = torch.autograd.grad(score, inputs, retain_graph=True)
        values = (grad[0, :n_prompt] * inputs[0, :n_prompt]).sum(-1)
        peak = float(values.abs().max()) or 1.0
        return [round(float(v) / peak, 4) for v in values]

    whole = grad_x_input(chosen.sum())
    per_token = [grad_x_input(chosen[i]) for i in range(min(per_token_limit, len(chosen)))]
    steps = []
    probs = logprobs.exp()
    top = probs.topk(min(top_k + 1, probs.shape[-1]), dim=-1)
    for i, token_id in enumerate(ids[n_prompt:]):
        alternatives = [
            {"token": tokenizer.decode([int(t)]), "p": round(float(p), 4)}
            for p, t in zip(top.values[i], top.indices[i], strict=True)
            if int(t) != token_id
        ][:top_k]
        steps.append({"token": tokenizer.decode([token_id]), "p": round(float(probs[i, token_id]), 4),
                      "alternatives": alternatives})  # fmt: skip
    return Explanation(
        request_id=request_id, model=version.ref,
        prompt_tokens=[tokenizer.decode([t]) for t in ids[:n_prompt]],
        answer_tokens=[s["token"] for s in steps], attribution=whole, per_token=per_token, steps=steps,
        citations=citations, answer_logprob=round(float(chosen.sum()), 4),
    )  # fmt: skip


TEMPLATE = Path(__file__).parent / "templates" / "explain.html.j2"


def _colour(value: float) -> str:
    alpha = min(1.0, abs(value)) * 0.6
    return f"rgba(0,120,255,{alpha:.2f})" if value >= 0 else f"rgba(255,60,0,{alpha:.2f})"


def _top(values: list[float], n: int = 3) -> list[int]:
    return sorted(range(len(values)), key=lambda i: -abs(values[i]))[:n]


def write_html(explanation: Explanation, path: Path) -> Path:
    from jinja2 import Environment

    env = Environment(autoescape=True)
    env.globals.update(colour=_colour, top=_top)
    path.write_text(env.from_string(TEMPLATE.read_text()).render(e=explanation))
    return path
