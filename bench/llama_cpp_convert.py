"""Bench-only: convert a Lamina Llama folder to GGUF with llama.cpp's own converter.

llama.cpp's ``convert_hf_to_gguf.py`` knows SentencePiece and known BPE pre-tokenizers only, and
Lamina's tokenizers (character-level or our own byte-level BPE) are neither. The benchmark feeds
llama.cpp token ids, not text, so the vocabulary only has to exist with the right ids: this writes
it as a plain SentencePiece-style list (each token's text, score 0) and lets the converter write the
weights unchanged.

    PYTHONPATH=LLAMA_SRC/gguf-py python bench/llama_cpp_convert.py LLAMA_SRC MODEL_DIR OUT.gguf [f32|bf16]
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    source, model_dir, out = sys.argv[1:4]
    outtype = sys.argv[4] if len(sys.argv) > 4 else "f32"  # f32 or bf16: the weights as they are, or bf16
    sys.path.insert(0, source)
    import gguf
    from conversion import llama
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def set_vocab(self: object) -> None:
        vocab = self.hparams["vocab_size"]  # type: ignore[attr-defined]
        by_id = {i: t for t, i in tokenizer.get_vocab().items()}
        tokens = [by_id.get(i, f"[unused{i}]").encode() for i in range(vocab)]
        special = set(tokenizer.all_special_ids)
        types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(vocab)]
        writer = self.gguf_writer  # type: ignore[attr-defined]
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores([0.0] * vocab)
        writer.add_token_types(types)
        for name, token_id in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                               ("unk", tokenizer.unk_token_id), ("pad", tokenizer.pad_token_id)):  # fmt: skip
            if token_id is not None:
                getattr(writer, f"add_{name}_token_id")(token_id)

    llama.LlamaModel.set_vocab = set_vocab
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outfile", out, "--outtype", outtype]
    sys.path.insert(0, str(Path(source)))
    import convert_hf_to_gguf

    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
