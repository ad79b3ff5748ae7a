"""The fast decode path for Llama-architecture models: fused projections and a static slot cache.

Why this exists: a small model's decode step in transformers' modules is almost all per-call
Python and dispatch, not arithmetic (llama.cpp runs the same weights ~5× faster; figures per CPU
class in docs/benchmarks.md, "Serving: the decode step"). So for the family Lamina trains
(``LlamaForCausalLM``) the engine runs its own forward pass over the same weights:

- q/k/v and gate/up projections are fused into one matmul each (from the model's own weights);
- the KV cache is allocated once, ``(slots, kv_heads, context, head_dim)`` per layer. Row ``i`` of
  the running batch lives in slot ``i`` at its own absolute positions, so rows of different lengths
  need no padding and no copying when a request joins; when rows leave, the ones after them move
  down (one copy of their filled part), so the batch is always slots ``0..n-1`` and attention reads
  a plain view of the cache;
- rotary tables are precomputed for every position with the model's own ``rotary_emb``;
- prompts waiting together are prefilled in one padded, masked forward pass (``prefill_many``);
- fp32 and bf16 projections of more than one row use oneDNN with weights packed once at load
  (``PackedLinear``): MKL's sgemm takes a slow generic path on AMD CPUs for small batches
  (docs/benchmarks.md); several rows' attention is batched matmuls (``_attend``);
- one running row (``step_alone``) decodes *and samples* in one function, which ``SlotRunner``
  calls several times per engine iteration; with ``compile=True`` (on by default in ``lamina
  serve``) it goes through ``torch.compile`` written for inductor (``_project``, ``_attend``), so
  the whole step is one C++ kernel streaming the weights (a third faster than the compiled
  transformers-style step before). Several rows' attention is compiled too. Compiling takes
  seconds at load, done before the model serves (docs/benchmarks.md).

RMSNorm, RoPE, attention and SwiGLU are written with the same operations in the same order as
transformers' Llama, so greedy decoding gives transformers' tokens (tested). Models this path does
not cover (other architectures, RoPE scaling, sliding windows) use ``dynamic_runner``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from lamina.serving.sampling import choose, penalise

log = logging.getLogger(__name__)
MAX_CACHE_BYTES = 2 << 30  # beyond this, the generic (growing) cache path is the better trade
Keep = list[torch.Tensor] | None  # activations a compiled single-row step stores (see _project)


def supports(model: Any, slots: int) -> bool:
    """Whether ``model`` can run on this path (and its static cache fits the memory budget)."""
    cfg = getattr(model, "config", None)
    if cfg is None or type(model).__name__ != "LlamaForCausalLM":
        return False
    scaling = getattr(cfg, "rope_scaling", None) or {}
    rope_type = (
        scaling.get("rope_type", scaling.get("type", "default")) if isinstance(scaling, dict) else None
    )
    if rope_type not in (None, "default") or getattr(cfg, "hidden_act", "silu") != "silu":
        return False
    if getattr(cfg, "mlp_bias", False) or getattr(cfg, "pretraining_tp", 1) != 1:
        return False
    linears = (layer.self_attn.q_proj for layer in model.model.layers)
    if not all(type(m) is nn.Linear for m in linears):  # already quantized: use the generic path
        return False
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_slot = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.max_position_embeddings * head_dim
    return per_slot * slots * 4 <= MAX_CACHE_BYTES


class PackedLinear(nn.Module):
    """An fp32 or bf16 Linear whose weight oneDNN has reordered once, for matmuls of several rows."""

    def __init__(self, linear: nn.Linear, rows_hint: int) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows_hint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == x.shape[-1]:  # one row: MKL's gemv is the faster kernel
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def packed_twin(module: nn.Module, rows_hint: int) -> nn.Module:
    """A copy of ``module`` sharing its weights, with its fp32 Linears packed (``pack_linears``)."""
    import copy

    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return pack_linears(copy.deepcopy(module, memo=shared), rows_hint)


def pack_linears(module: nn.Module, rows_hint: int) -> nn.Module:
    """Swap every fp32 or bf16 ``nn.Linear`` in ``module`` for a ``PackedLinear`` where oneDNN is usable.

    Checked on a probe against ``F.linear`` first: if this torch build lacks the op, or it
    disagrees, the module is left as it was.
    """
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return module
    for name, child in list(module.named_children()):
        dtype = child.weight.dtype if type(child) is nn.Linear else None
        if dtype in (torch.float32, torch.bfloat16):
            tolerance = 1e-4 if dtype == torch.float32 else 2e-2
            linear = cast(nn.Linear, child)
            try:
                packed = PackedLinear(linear, rows_hint)
                probe = torch.randn(3, linear.in_features, dtype=dtype)
                ok = torch.allclose(
                    packed(probe).float(), F.linear(probe, linear.weight, linear.bias).float(),
                    atol=tolerance, rtol=tolerance,
                )  # fmt: skip
            except RuntimeError:
                ok = False
            if ok:
                setattr(module, name, packed)
        else:
            pack_linears(child, rows_hint)
    return module


def _fuse(*linears: nn.Linear) -> nn.Linear:
    """One Linear whose output is the given Linears' outputs side by side."""
    bias = linears[0].bias is not None
    fused = nn.Linear(linears[0].in_features, sum(m.out_features for m in linears), bias=bias)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([m.weight for m in linears]))
        if bias:
            fused.bias.copy_(torch.cat([m.bias for m in linears]))
    return fused.to(linears[0].weight.dtype)


class _Layer(nn.Module):
    def __init__(self, layer: Any) -> None:
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = _fuse(attn.q_proj, attn.k_proj, attn.v_proj)
        self.o = attn.o_proj
        self.gate_up = _fuse(mlp.gate_proj, mlp.up_proj)
        self.down = mlp.down_proj
        self.norm1, self.norm2 = layer.input_layernorm, layer.post_attention_layernorm


class FastLlama(nn.Module):
    """A ``LlamaForCausalLM``'s weights arranged for slot-cache decoding (see the module docstring)."""

    cos: torch.Tensor  # (context, head_dim) rotary tables, buffers
    sin: torch.Tensor
    embed: Any
    layers: Any  # nn.ModuleList of _Layer
    norm: Any
    lm_head: Any

    def __init__(self, model: Any) -> None:
        super().__init__()
        cfg = model.config
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.context = int(cfg.max_position_embeddings)
        self.embed = model.model.embed_tokens
        self.layers = nn.ModuleList(_Layer(layer) for layer in model.model.layers)
        self.norm, self.lm_head = model.model.norm, model.lm_head
        with torch.no_grad():
            positions = torch.arange(self.context)[None, :]
            probe = torch.zeros(1, dtype=torch.float32)
            cos, sin = model.model.rotary_emb(probe, positions)
        self.register_buffer("cos", cos[0], persistent=False)  # (context, head_dim)
        self.register_buffer("sin", sin[0], persistent=False)
        # attention of several rows; SlotRunner swaps in a compiled one (see _attend)
        self.attend_rows: Callable[..., torch.Tensor] = functools.partial(_attend, loops=False)

    @staticmethod
    def _rms(norm: Any, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # one fused op; equal to transformers' in fp32 (tested)
            return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)
        # transformers' LlamaRMSNorm op for op: the norm in fp32, the weight in the model's dtype
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * x.to(dtype)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return (x * cos) + (rotated * sin)

    def _qkv(
        self, layer: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keep: Keep = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated queries and keys and the values, ``(..., heads, head_dim)``; one RoPE for q and k."""
        qkv = _project(layer.qkv, self._rms(layer.norm1, x), keep)
        qk_size = (self.heads + self.kv_heads) * self.head_dim
        qk = self._rope(
            qkv[..., :qk_size].unflatten(-1, (self.heads + self.kv_heads, self.head_dim)), cos, sin
        )
        v = qkv[..., qk_size:].unflatten(-1, (self.kv_heads, self.head_dim))
        return qk[..., : self.heads, :], qk[..., self.heads :, :], v

    def _mlp(self, layer: Any, x: torch.Tensor, keep: Keep = None) -> torch.Tensor:
        gate, up = _project(layer.gate_up, self._rms(layer.norm2, x), keep).chunk(2, dim=-1)
        return x + _project(layer.down, F.silu(gate) * up, keep)

    def prefill(
        self, ids: torch.Tensor, slot: int | None, keys: list[torch.Tensor], values: list[torch.Tensor],
        every: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """Run a prompt ``(T,)`` into ``slot`` of the cache; the logits of its last token ``(1, V)``.

        ``slot`` None: write no cache; ``every``: the logits after every token ``(T, V)`` (prompt
        log-probabilities for ``echo``).
        """
        t = ids.shape[0]
        x = self.embed(ids[None, :])  # (1, T, hidden)
        cos, sin = self.cos[:t][None, :, None], self.sin[:t][None, :, None]  # (1, T, 1, head_dim)
        for i, layer in enumerate(self.layers):
            q, k, v = (part.transpose(1, 2) for part in self._qkv(layer, x, cos, sin))  # (1, heads, T, d)
            if slot is not None:
                keys[i][slot, :, :t] = k[0]
                values[i][slot, :, :t] = v[0]
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, enable_gqa=self.heads != self.kv_heads
            )
            x = x + layer.o(out.transpose(1, 2).reshape(1, t, -1))
            x = self._mlp(layer, x)
        return self.lm_head(self._rms(self.norm, x[0] if every else x[:, -1]))

    def prefill_many(
        self, prompts: list[list[int]], first_slot: int, keys: list[torch.Tensor], values: list[torch.Tensor]
    ) -> torch.Tensor:
        """Several prompts in one forward pass, into slots ``first_slot…``; each one's last logits.

        Prompts are right-padded to the longest; a mask hides each prompt's padding. The padding's
        keys and values land in the cache past the prompt's end, where decoding overwrites them
        before any query can see them.
        """
        rows, lengths = len(prompts), torch.tensor([len(p) for p in prompts])
        t = int(lengths.max())
        tokens = torch.zeros(rows, t, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens[row, : len(prompt)] = torch.tensor(prompt)
        x = self.embed(tokens)  # (rows, T, hidden)
        cos, sin = self.cos[:t][None, :, None], self.sin[:t][None, :, None]
        real = torch.arange(t)[None, :] < lengths[:, None]  # (rows, T)
        mask = torch.ones(t, t, dtype=torch.bool).tril()[None, None] & real[:, None, None, :]
        for i, layer in enumerate(self.layers):
            q, k, v = (part.transpose(1, 2) for part in self._qkv(layer, x, cos, sin))  # (rows, heads, T, d)
            keys[i][first_slot : first_slot + rows, :, :t] = k
            values[i][first_slot : first_slot + rows, :, :t] = v
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, enable_gqa=self.heads != self.kv_heads
            )  # fmt: skip
            x = x + layer.o(out.transpose(1, 2).reshape(rows, t, -1))
            x = self._mlp(layer, x)
        return self.lm_head(self._rms(self.norm, x[torch.arange(rows), lengths - 1]))

    def decode(
        self, tokens: torch.Tensor, positions: torch.Tensor, length: int, keys: list[torch.Tensor],
        values: list[torch.Tensor], keep: Keep = None,
    ) -> torch.Tensor:  # fmt: skip
        """One token for each of the first ``n`` slots at its own position; logits ``(n, V)``.

        ``length`` is the longest row's length after this token (how much of the cache to read).
        ``keep`` (single row, compiled): see ``_project`` and ``_attend``.
        """
        n = tokens.shape[0]
        rows = torch.arange(n)
        x = self.embed(tokens)  # (n, hidden)
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # (n, 1, head_dim)
        mask = (torch.arange(length)[None, :] <= positions[:, None])[:, None, None, :]  # (n, 1, 1, L)
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, x, cos, sin, keep)  # (n, heads, head_dim)
            keys[i][rows, :, positions] = k
            values[i][rows, :, positions] = v
            cached_k, cached_v = keys[i][:n, :, :length], values[i][:n, :, :length]
            if keep is None:
                out = self.attend_rows(q, cached_k, cached_v, mask)
            else:
                out = _attend(q, cached_k, cached_v, mask, loops=True)
            x = x + _project(layer.o, out.reshape(n, -1), keep)
            x = self._mlp(layer, x, keep)
        return _project(self.lm_head, self._rms(self.norm, x), keep)

    def step_alone(
        self, token: torch.Tensor, position: torch.Tensor, length: int, keys: list[torch.Tensor],
        values: list[torch.Tensor], seen: torch.Tensor, generated: torch.Tensor, knobs: torch.Tensor,
        uniform: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """Decode one token of the lone running row (slot 0) *and* choose the next: one graph.

        ``knobs`` ``(1, 6)``: ``choice_knobs`` then ``penalty_knobs``; ``uniform`` ``(1,)``. Returns
        the chosen token ``(1,)``, the row's log-probabilities ``(1, V)``, then the activations
        ``_project`` kept (ignore them). The sampling is ``sampling.choose``, the same code as the
        batched path, so a seed gives the same tokens either way.
        """
        keep: list[torch.Tensor] | None = [] if torch.compiler.is_compiling() else None
        logits = self.decode(token, position, length, keys, values, keep)
        logits = penalise(logits, seen, generated, knobs[:, 3:])
        chosen = choose(logits, knobs[:, :3], uniform)
        return chosen, torch.log_softmax(logits, dim=-1), *(keep or [])


def _project(linear: nn.Module, x: torch.Tensor, keep: Keep) -> torch.Tensor:
    """``linear(x)``; for one row under ``torch.compile`` (``keep`` given), as a reduction.

    Why: a one-row matmul only streams the weights, and inductor's vectorized reduction loop
    streams them ~1.5× faster than MKL's gemv here (all 17 projections of the 4.2M model: 246 vs
    328 µs fp32, 158 µs bf16). ``x`` is appended to ``keep`` and returned from the graph, which makes
    inductor store it once instead of recomputing the norm feeding it for every weight row.
    """
    weight = getattr(linear, "weight", None)
    if keep is None or type(linear) is not nn.Linear or not isinstance(weight, torch.Tensor):
        return linear(x)
    keep.append(x)
    y = (weight.float() * x.float()[..., None, :]).sum(-1)
    if linear.bias is not None:
        y = y + linear.bias.float()
    return y.to(x.dtype)


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, *, loops: bool
) -> torch.Tensor:
    """Attention of one query per row: ``q`` ``(n, heads, d)``, cache views ``k``/``v``
    ``(n, kv_heads, L, d)``, ``mask`` ``(n, 1, 1, L)``; returns ``(n, heads, d)``. Softmax in fp32.

    Why not SDPA: its CPU flash kernel is built for long queries; with one query per row, plain
    batched matmuls were faster. With ``loops`` (a compiled single row), products and sums instead
    of matmuls: inductor turns each into one vectorized loop, which it does not do for ``@`` here
    (measurements: docs/benchmarks.md, "Serving: the decode step").
    Query heads are grouped under the kv head they read (grouped-query attention), with no copies.
    """
    n, heads, d = q.shape
    kv = k.shape[1]
    q = q.reshape(n, kv, heads // kv, d)
    if loops:
        scores = (q[:, :, :, None, :] * k[:, :, None]).sum(-1)  # (n, kv, group, L)
    else:
        scores = q @ k.transpose(-1, -2)
    scores = scores.float() * d**-0.5
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).to(v.dtype)
    out = (weights[..., None] * v[:, :, None]).sum(-2) if loops else weights @ v  # (n, kv, group, d)
    return out.reshape(n, heads, d)


class SlotRunner:
    """Runs a ``FastLlama`` over its static cache for the engine: prefill, commit, decode, keep.

    ``decode_alone`` serves the common case of one running request: several tokens per call, each
    step decoding and sampling in one (optionally compiled) graph.
    """

    def __init__(self, fast: FastLlama, slots: int, *, pack: bool = False, compile: bool = False) -> None:
        self.fast, self.slots = fast, slots
        # prefill and several rows: packed oneDNN weights where asked (fp32, bf16)
        self.many: FastLlama = cast(FastLlama, packed_twin(fast, slots)) if pack else fast
        self._alone = fast.step_alone
        if compile:
            for parameter in fast.parameters():
                parameter.requires_grad_(False)
            # dynamic: one graph for every cache length. No weight freezing: it would constant-fold
            # bf16 weights to fp32 copies (twice the bytes to stream per token).
            self._alone = torch.compile(fast.step_alone, dynamic=True)
            # several rows: only attention is compiled (loops read the cache in place; batched
            # matmuls copy bf16 cache views first), faster in both precisions (docs/benchmarks.md).
            # The projections stay oneDNN's (compiled, they were slower).
            self.many.attend_rows = torch.compile(functools.partial(_attend, loops=True), dynamic=True)
        dtype = fast.embed.weight.dtype if fast.embed.weight.is_floating_point() else torch.float32
        shape = (slots, fast.kv_heads, fast.context, fast.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype) for _ in fast.layers]
        self.values = [torch.zeros(shape, dtype=dtype) for _ in fast.layers]
        self.lengths: list[int] = []  # tokens in the cache for each running row
        self._pending: list[int] = []
        if compile:
            self.warm_up()

    def warm_up(self) -> None:
        """Compile now rather than on the first requests: the lone-row step and several-row attention.

        Compiling needs a C++ compiler; where it fails, the eager code serves instead (slower, same
        tokens) and the reason is logged once.
        """
        try:
            vocab = self.fast.lm_head.out_features
            counts = torch.zeros(1, vocab)
            for knobs in ([0.0, vocab, 1.0, 1.0, 0.0, 0.0], [0.8, 5, 0.9, 1.2, 0.5, 0.5]):
                self.prefill([[0]])
                self.commit([True])
                self.decode_alone(
                    torch.zeros(1, dtype=torch.long), 3, counts, counts.clone(), torch.tensor([knobs])
                )
                self.keep([])
            # several rows; and one row on the batched path (a constrained request, whose logits
            # are edited outside the graph): size 1 is a shape of its own to the compiler
            for rows in ([[0], [0, 1]], [[0]]) if self.slots > 1 else ([[0]],):
                self.keep([])
                self.prefill(rows)
                self.commit([True] * len(rows))
                for _ in range(3):
                    self.decode(torch.zeros(len(rows), dtype=torch.long))
        except Exception as exc:  # inductor raises many kinds; any of them means "serve eagerly"
            log.warning("torch.compile failed; decoding without it: %s", str(exc).splitlines()[0][:300])
            self._alone = self.fast.step_alone
            self.many.attend_rows = functools.partial(_attend, loops=False)
        finally:
            self.keep([])

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]]) -> torch.Tensor:
        """Prompts into the next free slots (one forward pass); their last logits ``(k, V)``."""
        self._pending = [len(p) for p in prompts]
        if len(prompts) == 1:
            return self.many.prefill(torch.tensor(prompts[0]), self.rows, self.keys, self.values)
        return self.many.prefill_many(prompts, self.rows, self.keys, self.values)

    @torch.inference_mode()
    def score(self, ids: list[int]) -> torch.Tensor:
        """The logits after every prompt token ``(T, V)`` (prompt log-probabilities, ``echo``)."""
        return self.many.prefill(torch.tensor(ids), None, self.keys, self.values, every=True).float()

    def commit(self, joining: list[bool]) -> None:
        """The prefilled prompts marked True join the batch (the others finished on their first token)."""
        before = self.rows
        self.lengths.extend(self._pending)
        if not all(joining):
            self.keep([*range(before), *(before + j for j, joins in enumerate(joining) if joins)])

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.tensor(self.lengths)
        self.lengths = [p + 1 for p in self.lengths]
        return self.many.decode(tokens, positions, max(self.lengths), self.keys, self.values)

    @torch.inference_mode()
    def decode_alone(
        self, token: torch.Tensor, steps: int, seen: torch.Tensor, generated: torch.Tensor,
        knobs: torch.Tensor, uniform: torch.Tensor | None = None, count: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """``steps`` tokens of the one running row, fed back to itself without leaving the runner.

        ``knobs`` ``(1, 6)``: ``choice_knobs`` and ``penalty_knobs``; ``uniform`` ``(steps,)``, one
        number per step; ``count``: add each token to ``seen`` and ``generated`` (penalties read
        them). Returns the tokens ``(steps,)`` and each step's log-probabilities ``(steps, V)``.
        """
        if uniform is None:
            uniform = torch.rand(steps)
        # always an inference tensor (a fed-back token is one, a prefilled one is not): a compiled
        # step guards on the dispatch keys, and a mismatch recompiled it on the first request
        token = token.clone()
        tokens, logprobs = [], []
        for step in range(steps):
            position = self.lengths[0]
            self.lengths[0] = position + 1
            token, row, *_ = self._alone(
                token, torch.tensor([position]), position + 1, self.keys, self.values, seen, generated, knobs,
                uniform[step : step + 1].clone(),
            )  # fmt: skip
            if count:
                seen[0, token] += 1
                generated[0, token] += 1
            tokens.append(token)
            logprobs.append(row)
        return torch.cat(tokens), torch.cat(logprobs)

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (ascending), moving each down to its new slot (no copy for the rest)."""
        for new, old in enumerate(rows):
            if new != old:
                length = self.lengths[old]
                for cache in (*self.keys, *self.values):
                    cache[new, :, :length] = cache[old, :, :length]
        self.lengths = [self.lengths[r] for r in rows]
