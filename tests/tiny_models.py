"""Tiny randomly initialised models of other families, built offline, saved as real
sentence-transformers directories. Their numbers mean nothing; their code paths are the real ones.

- ModernBERT (RoPE, 4,096 positions) with the packaged MiniLM's WordPiece tokenizer ([CLS]/[SEP]);
- a RoBERTa encoder with a byte-level BPE trained here on the bundled haystack text (<s>, </s>);
- a Qwen2 decoder with the same kind of BPE, EOS <|endoftext|> and no BOS.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from lmk_eval.common.files import honour_umask

SIZE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
PROMPTS = {"query": "query: ", "document": "passage: "}
# their ST directories' pooling
NATIVE = {
    "modernbert": "mean",
    "roberta": "cls",
    "qwen2": "lasttoken",
}


def haystack_text(n_words: int = 60_000) -> list[str]:
    from lmk_eval.retrieval.synthetic import haystack_words

    words = haystack_words()[:n_words]
    return [" ".join(words[i : i + 200]) for i in range(0, len(words), 200)]


def bpe_tokenizer(specials: list[str], roberta: bool):
    """A byte-level BPE of 1,200 tokens trained on the haystack books."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(haystack_text(), trainer)
    if roberta:
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>"))
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            unk_token="<unk>",
            pad_token="<pad>",
            mask_token="<mask>",
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def build_modernbert(folder: Path, positions: int = 4096, base_sized: bool = False) -> Path:
    """Tiny by default; ``base_sized``: ModernBERT-base's shape (its config's defaults: 22 layers
    of width 768, local attention 128), for benchmarks whose time must be a real model's."""
    from transformers import BertTokenizerFast, ModernBertConfig, ModernBertModel

    from lmk_eval.model.loading import packaged_model_path

    tokenizer = BertTokenizerFast.from_pretrained(str(packaged_model_path()))
    config = ModernBertConfig(
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=positions,
        pad_token_id=0,
        cls_token_id=101,
        sep_token_id=102,
        bos_token_id=101,
        eos_token_id=102,
        **({} if base_sized else {**SIZE, "local_attention": 64}),
    )
    return _save(folder, ModernBertModel(config), tokenizer)


def build_roberta(folder: Path) -> Path:
    from transformers import RobertaConfig, RobertaModel

    tokenizer = bpe_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], roberta=True)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        **SIZE,
    )
    return _save(folder, RobertaModel(config), tokenizer)


def build_qwen2(folder: Path) -> Path:
    from transformers import Qwen2Config, Qwen2Model

    tokenizer = bpe_tokenizer(["<|endoftext|>"], roberta=False)
    eos = tokenizer.eos_token_id
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        num_key_value_heads=1,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=eos,
        **SIZE,
    )
    return _save(folder, Qwen2Model(config), tokenizer)


def _save(folder: Path, model, tokenizer) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    honour_umask(folder)  # safetensors writes its file 0600
    return folder


BUILDERS = {"modernbert": build_modernbert, "roberta": build_roberta, "qwen2": build_qwen2}


def as_sentence_transformer(
    model_dir: Path,
    target: Path,
    pooling_mode: str,
    *,
    prompts: dict[str, str] | None = PROMPTS,
    normalize: bool = True,
    include_prompt: bool = True,
    max_seq_length: int = 256,
    similarity: str | None = None,
) -> Path:
    """``model_dir`` wrapped as a sentence-transformers directory with the given pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(str(model_dir), max_seq_length=max_seq_length)
    pool = Pooling(
        transformer.get_embedding_dimension(),
        pooling_mode=pooling_mode,
        include_prompt=include_prompt,
    )
    modules = [transformer, pool] + ([Normalize()] if normalize else [])
    st = SentenceTransformer(
        modules=modules, prompts=prompts or {}, device="cpu", similarity_fn_name=similarity
    )
    if target.exists():
        shutil.rmtree(target)
    st.save(str(target))
    honour_umask(target)
    return target


def build_all(root: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    return {name: build(root / name) for name, build in BUILDERS.items()}


# python -m tests.tiny_models FOLDER [POSITIONS]: the extension study's tiny ModernBERT
if __name__ == "__main__":
    import sys

    torch.manual_seed(0)
    print(build_modernbert(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 4096))
