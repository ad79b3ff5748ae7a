"""Model versions and aliases.

A version is an immutable folder (weights + config + tokenizer + ``lamina_model.json`` + a model
card) recorded as a ``model_version`` artifact. Aliases name versions (``champion``, ``challenger``,
any name); every move is an alias event, and ``rollback`` replays those events to find where the
alias pointed before the current target (a rollback of a rollback goes further back, not forth).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lamina.core.catalog import AliasEvent, Artifact, Model, ModelVersion
from lamina.core.errors import LaminaError, NotFound
from lamina.core.workspace import Workspace
from lamina.hub.card import render_card

META_FILE = "lamina_model.json"


def register(
    ws: Workspace,
    folder: Path,
    name: str,
    family: str,
    *,
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    run_id: str | None = None,
    parents: list[tuple[str, str]] | None = None,
    meta: dict[str, Any] | None = None,
    description: str | None = None,
) -> ModelVersion:
    """Commit ``folder`` as the next version of model ``name`` (a model card is written into it)."""
    lineage = [ws.catalog.get(pid) for pid, _ in parents or []]
    (folder / "README.md").write_text(render_card(name, family, config, metrics or {}, lineage, description))
    (folder / META_FILE).write_text(
        json.dumps(
            {"name": name, "family": family, "config": config, "metrics": metrics or {}, **(meta or {})},
            indent=1,
            default=str,
        )
    )
    version = ModelVersion(
        name=name,
        family=family,
        run_id=run_id,
        metrics=metrics or {},
        description=description,
        meta={"config": config, **(meta or {})},
    )
    result = ws.commit(folder, version, parents or [])
    return result.artifact  # type: ignore[return-value]


def resolve_model(ws: Workspace, ref: str) -> ModelVersion:
    artifact = ws.resolve(ref, kind="model_version")
    if not isinstance(artifact, ModelVersion):
        raise NotFound(f"{ref} is not a model version")
    return artifact


def model_path(ws: Workspace, ref: str | ModelVersion) -> Path:
    version = resolve_model(ws, ref) if isinstance(ref, str) else ref
    return ws.artifact_path(version)


def promote(
    ws: Workspace, ref: str, alias: str, reason: str | None = None
) -> tuple[ModelVersion, str | None]:
    """Point ``alias`` of the model at the version ``ref`` names; returns (version, previous version id)."""
    version = resolve_model(ws, ref)
    previous = ws.catalog.set_alias(version.name, alias, version.id, reason=reason or "promote")
    return version, previous


def _alias_stack(ws: Workspace, name: str, alias: str) -> list[str]:
    with ws.catalog.session() as session:
        model = session.scalar(sa.select(Model).where(Model.name == name))
        if model is None:
            raise NotFound(f"no model named {name!r}")
        events = session.scalars(
            sa.select(AliasEvent)
            .where(AliasEvent.model_id == model.id, AliasEvent.alias == alias)
            .order_by(AliasEvent.id)
        ).all()
    stack: list[str] = []
    for event in events:
        if event.reason == "rollback":
            if stack:
                stack.pop()
        elif event.to_version_id:
            stack.append(event.to_version_id)
    return stack


def alias_moves(ws: Workspace, version_id: str) -> list[dict[str, Any]]:
    """Every alias move to or from a version (when, by whom, why), oldest first: how it came to
    serve, or stopped serving."""
    with ws.catalog.session() as session:
        events = session.execute(
            sa.select(AliasEvent, Model.name)
            .join(Model, Model.id == AliasEvent.model_id)
            .where(sa.or_(AliasEvent.to_version_id == version_id, AliasEvent.from_version_id == version_id))
            .order_by(AliasEvent.id)
        ).all()  # fmt: skip
        refs = {a.id: a.ref for a in session.scalars(sa.select(ModelVersion)).all()}
        return [
            {"alias": f"{name}@{e.alias}", "from": refs.get(e.from_version_id or ""),
             "to": refs.get(e.to_version_id or ""), "at": e.at.isoformat(), "actor": e.actor,
             "reason": e.reason}
            for e, name in events
        ]  # fmt: skip


def rollback(ws: Workspace, name: str, alias: str = "champion") -> tuple[str, str]:
    """Move ``alias`` back to the version it named before the current one. Returns (from id, to id)."""
    stack = _alias_stack(ws, name, alias)
    if len(stack) < 2:
        raise LaminaError(
            f"{name}@{alias} has no earlier version to roll back to",
            hint=f"promote a version first: lamina models promote {name}@vN {alias}",
        )
    current, target = stack[-1], stack[-2]
    ws.catalog.set_alias(name, alias, target, reason="rollback")
    return current, target


def list_models(ws: Workspace) -> list[dict[str, Any]]:
    aliases: dict[str, list[str]] = {}
    for row in ws.catalog.aliases():
        aliases.setdefault(row["version_id"], []).append(row["alias"])
    out = []
    for version in ws.catalog.find("model_version"):
        assert isinstance(version, ModelVersion)
        out.append(
            {
                "ref": version.ref,
                "id": version.id,
                "name": version.name,
                "version": version.version,
                "family": version.family,
                "aliases": sorted(aliases.get(version.id, [])),
                "metrics": version.metrics,
                "created_at": version.created_at.isoformat(),
            }
        )
    return out


def show(ws: Workspace, ref: str) -> dict[str, Any]:
    version = resolve_model(ws, ref)
    folder = ws.artifact_path(version)
    return {
        "ref": version.ref,
        "id": version.id,
        "family": version.family,
        "metrics": version.metrics,
        "aliases": sorted(r["alias"] for r in ws.catalog.aliases() if r["version_id"] == version.id),
        "config": version.meta.get("config"),
        "run_id": version.run_id,
        "parents": [
            {"ref": a.ref, "kind": a.kind, "relation": rel} for a, rel in ws.catalog.parents(version.id)
        ],
        "evaluations": [a.summary() for a, rel in ws.catalog.children(version.id) if a.kind == "eval_report"],
        "path": str(folder),
        "card": (folder / "README.md").read_text() if (folder / "README.md").exists() else "",
    }


def validate_causal_lm_folder(path: Path) -> dict[str, Any]:
    """Check that ``path`` holds a causal LM that transformers can load (config, weights, tokenizer)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not (path / "config.json").is_file():
        raise LaminaError(f"{path} is not a Hugging Face model folder: config.json is missing")
    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise LaminaError(f"{path}/config.json cannot be read: {exc}") from exc
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise LaminaError(
            f"{path} holds a {config.model_type!r} model, which is not a causal language model",
            hint="import a decoder-only LM (llama, gpt2, mistral, qwen2, …)",
        )
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise LaminaError(f"{path} has no weights (*.safetensors or *.bin)")
    if not ((path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists()):
        raise LaminaError(f"{path} has no tokenizer (tokenizer.json / tokenizer_config.json)")
    return config.to_dict()


def import_embedding_model(ws: Workspace, path: Path, name: str) -> ModelVersion:
    """Register a saved sentence-transformers folder (family ``embedding``) after it loads and encodes;
    ``/v1/embeddings`` and RAG collections can then use it by reference."""
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        dimension = len(model.encode(["a sentence to check the model with"])[0])
    except Exception as exc:  # sentence-transformers raises many types for broken folders
        raise LaminaError(
            f"{path} does not load as a sentence-transformers model: {type(exc).__name__}: {exc}"
        ) from exc
    config = {"dimension": dimension, "max_seq_length": int(model.max_seq_length)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        shutil.copytree(path, folder, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        return register(
            ws, folder, name, "embedding", config=config, meta={"imported_from": str(path)},
            description=f"Embedding model imported from {path}",
        )  # fmt: skip


def is_cross_encoder(folder: Path) -> bool:
    """A transformers folder whose model classifies sequences (how cross-encoders are saved)."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text()).get("architectures") or []
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def import_reranker(ws: Workspace, path: Path, name: str) -> ModelVersion:
    """Register a cross-encoder folder (family ``reranker``) after it loads and scores a pair."""
    from sentence_transformers import CrossEncoder

    try:
        model = CrossEncoder(str(path), device="cpu", local_files_only=True)
        model.predict([("a question", "a passage")], show_progress_bar=False)
    except Exception as exc:  # transformers raises many types for broken folders
        raise LaminaError(f"{path} does not load as a cross-encoder: {type(exc).__name__}: {exc}") from exc
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        shutil.copytree(path, folder, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        return register(
            ws, folder, name, "reranker", config={}, meta={"imported_from": str(path)},
            description=f"Cross-encoder reranker imported from {path}",
        )  # fmt: skip


def import_model(ws: Workspace, path: Path, name: str) -> ModelVersion:
    """Register an outside folder after checking it loads; nothing is recorded if it does not.

    A sentence-transformers folder (``modules.json``) becomes an ``embedding`` model; anything else
    must be a Hugging Face causal LM.
    """
    path = Path(path).resolve()
    if not path.is_dir():
        raise NotFound(f"{path} is not a folder")
    if is_cross_encoder(path):
        return import_reranker(ws, path, name)
    if (path / "modules.json").is_file():
        return import_embedding_model(ws, path, name)
    config = validate_causal_lm_folder(path)
    from transformers import AutoModelForCausalLM

    try:  # the real loader must accept it, and every weight must be in the checkpoint
        _, info = AutoModelForCausalLM.from_pretrained(str(path), output_loading_info=True)
    except Exception as exc:  # transformers raises many types for broken checkpoints
        raise LaminaError(f"{path} does not load as a causal LM: {type(exc).__name__}: {exc}") from exc
    missing = [k for k in info.get("missing_keys", []) if "lm_head" not in k]  # tied heads are not stored
    if missing or info.get("mismatched_keys"):
        raise LaminaError(
            f"{path}: the weights do not match config.json ({len(missing)} missing, "
            f"{len(info.get('mismatched_keys', []))} of the wrong shape, "
            f"e.g. {(missing or info['mismatched_keys'])[:2]})",
            hint="import the folder exactly as it was saved (config and weights of the same model)",
        )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        shutil.copytree(path, folder, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        return register(
            ws,
            folder,
            name,
            "causal_lm",
            config={
                "hf": {
                    k: config[k]
                    for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
                    if k in config
                }
            },
            meta={"imported_from": str(path)},
            description=f"Imported from {path}",
        )


def export_model(ws: Workspace, ref: str, dest: Path) -> Path:
    """Write a plain HF folder (no Lamina files needed to load it)."""
    version = resolve_model(ws, ref)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise LaminaError(f"{dest} exists and is not empty", hint="export into a new folder")
    shutil.copytree(
        ws.artifact_path(version), dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("MANIFEST.json")
    )
    return dest


def lineage_ids(ws: Workspace, artifact: Artifact) -> list[str]:
    return [a.id for a, _ in ws.catalog.parents(artifact.id)]
