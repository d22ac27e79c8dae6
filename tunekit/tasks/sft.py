"""Supervised fine-tuning of a decoder on (prompt, response) pairs: the loss on the response's
tokens only, the prompt written with the tokenizer's chat template when it has one.

    model = tk.load_model("smollm2", task="sft", instruction="Write a headline for this article.")
    tk.train(model, tk.data.bbc_headlines(), tk.LoRA(r=8))

Each example is ``prompt + response + end-of-turn``: with a chat template, the prompt is the
template applied to one user turn (the ``instruction``, a blank line, the source) with the
assistant's turn opened, and the response ends with the tokenizer's end-of-sequence token (for
SmolLM2-Instruct ``<|im_end|>``, which is how its template closes a turn); without one, the
prompt is the source and a line break (plus whatever special tokens the tokenizer adds). Only the
response's tokens (and that end token) count in the loss and the perplexity. A pair longer than
``max_length`` has its source cut at a token boundary (the response kept whole); a response too
long to fit beside :data:`MIN_SOURCE_TOKENS` of source is cut too. The split counts both
(``truncated``), and the record keeps the counts.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from tunekit.batches import EncodedSplit, pad, pad_left
from tunekit.config import ConfigError
from tunekit.tasks.base import model_inputs
from tunekit.tasks.causal_lm import CausalLM, CausalLMModule
from tunekit.tasks.generation import SAMPLE_CHARS, GenerationMetrics, Writes, generation_settings, text_tensor

MIN_SOURCE_TOKENS = 8
"""The fewest source tokens a pair keeps when its response is long (the response is cut then)."""


def cut_text(tokenizer, text: str, n_tokens: int) -> str:
    """``text`` up to the end of its ``n_tokens``-th token (character offsets of a fast tokenizer;
    a slow one decodes the first tokens back)."""
    if n_tokens <= 0:
        return ""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True,
                        max_length=n_tokens + 1)
        offsets = enc["offset_mapping"]
        return text if n_tokens >= len(offsets) else text[:offsets[n_tokens - 1][1]]
    except NotImplementedError:  # a slow tokenizer has no offsets
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=n_tokens + 1)["input_ids"]
        return text if n_tokens >= len(ids) else tokenizer.decode(ids[:n_tokens])


def end_token(tokenizer) -> int:
    """The token that ends a response: the tokenizer's end-of-sequence token, else its separator
    (a BERT-style tokenizer, as the tiny test models carry)."""
    for tid in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if tid is not None:
            return int(tid)
    raise ConfigError("task 'sft' needs a tokenizer with an end-of-sequence (or separator) token to end each "
                      "response; this tokenizer has neither")


class SFTModule(Writes, CausalLMModule):
    """``forward(batch) -> TaskOutput``: the mean next-token loss over the responses' tokens
    (the batch's ``labels`` hold -100 over prompts and padding); ``generate_samples`` writes
    responses to the batch's prompts."""

    def __init__(self, hf, head_name: str, tokenizer, generation: dict, eos_id: int):
        super().__init__(hf, head_name)
        self.tokenizer = tokenizer
        self.generation = generation
        self.eos_id = eos_id

    @torch.no_grad()
    def generate_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The new tokens a left-padded batch of prompts gets [batch, new], greedy (or beam search
        with ``num_beams > 1``), stopping at the end token. Through transformers' ``generate``;
        under prefix tuning (learned keys and values as past tokens, which ``generate`` cannot be
        handed), greedily here, step by step over the whole sequence."""
        g = self.generation
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        prompt = getattr(self, "prompt", None)
        if prompt is not None and prompt.kind == "past":
            return self._greedy(input_ids, attention_mask, g["max_new_tokens"])
        inputs = self.inputs(input_ids, attention_mask)
        out = self.hf.generate(**inputs, max_new_tokens=g["max_new_tokens"], num_beams=g["num_beams"],
                               do_sample=False, pad_token_id=pad_id, eos_token_id=self.eos_id)
        return out[:, input_ids.shape[1]:] if "input_ids" in inputs else out

    def _greedy(self, ids: torch.Tensor, mask: torch.Tensor, steps: int) -> torch.Tensor:
        new = []
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(steps):
            logits = self.hf(**model_inputs(self, ids, mask)).logits[:, -1]
            nxt = logits.argmax(-1).masked_fill(done, self.eos_id)
            new.append(nxt)
            done |= nxt == self.eos_id
            ids = torch.cat([ids, nxt[:, None]], 1)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], 1)
            if bool(done.all()):
                break
        return torch.stack(new, 1)



class SFT(CausalLM):
    """A decoder taught to answer prompts: (prompt, response) pairs (:func:`tunekit.data.from_pairs`,
    :func:`tunekit.data.bbc_headlines`), the loss on the response only.

    Args:
        chat_template: True: write prompts with the tokenizer's chat template (an error if it has
            none); False: as plain text; None: the template when the tokenizer has one.
        instruction: text put before each source in the prompt (e.g. "Write a headline for this
            article."), a blank line between them; None: the source alone.
        generation: how evaluations generate (:func:`tunekit.tasks.generation.generation_settings`).
    """

    name = "sft"
    pipeline_tag = "text-generation"
    pairs = True

    def __init__(self, chat_template: Optional[bool] = None, instruction: Optional[str] = None,
                 generation: Optional[dict] = None):
        if chat_template not in (None, True, False):
            raise ConfigError(f"chat_template must be True, False or None (got {chat_template!r})")
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise ConfigError(f"instruction must be a non-empty string or None (got {instruction!r})")
        self.chat_template = chat_template
        self.instruction = instruction
        self.generation = generation_settings(generation)

    def bind(self, tokenizer, source: str = "the model") -> None:
        """Settle what depends on the tokenizer: the chat template (refused where asked for and
        missing) and the end token."""
        has = bool(getattr(tokenizer, "chat_template", None))
        if self.chat_template is True and not has:
            raise ConfigError(f"chat_template=True, but the tokenizer of {source} has no chat template; pass "
                              f"chat_template=False to write prompts as plain text")
        if self.chat_template is None:
            self.chat_template = has
        self.eos_id = end_token(tokenizer)

    def options(self) -> dict:
        """What rebuilds this task (recorded with the model)."""
        return {"chat_template": self.chat_template, "instruction": self.instruction,
                "generation": dict(self.generation)}

    def describe(self) -> dict:
        return {"name": self.name, **self.options()}

    # ----- examples -------------------------------------------------------------------------------
    def prompt_text(self, tokenizer, source: str) -> str:
        content = source if self.instruction is None else f"{self.instruction}\n\n{source}"
        if self.chat_template:
            return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                 add_generation_prompt=True)
        return content + "\n"

    def prompt_ids(self, tokenizer, source: str) -> list[int]:
        """The prompt's token ids (the template writes its own special tokens; plain text gets the
        tokenizer's)."""
        return tokenizer(self.prompt_text(tokenizer, source), add_special_tokens=not self.chat_template)["input_ids"]

    def encode_pair(self, tokenizer, source: str, target: str, max_length: int, counts: dict) -> dict:
        """One example: ``input_ids`` (prompt + response + end token), where the response starts,
        and the ids generation and scoring read."""
        response = tokenizer(target, add_special_tokens=False)["input_ids"] + [self.eos_id]
        overhead = len(self.prompt_ids(tokenizer, ""))
        if max_length - overhead < MIN_SOURCE_TOKENS + 1:
            raise ConfigError(f"max_length={max_length} leaves no room: the prompt's template and instruction "
                              f"alone take {overhead} tokens; use max_length >= {overhead + MIN_SOURCE_TOKENS + 1}")
        room_for_response = max_length - overhead - MIN_SOURCE_TOKENS
        if len(response) > room_for_response:
            response = response[:room_for_response]
            counts["targets_truncated"] = counts.get("targets_truncated", 0) + 1
        room = max_length - overhead - len(response)
        cut = False
        for _ in range(4):  # a cut at a token boundary can tokenise a little differently inside the template
            text = cut_text(tokenizer, source, room)
            cut = cut or text != source
            prompt = self.prompt_ids(tokenizer, text)
            excess = len(prompt) + len(response) - max_length
            if excess <= 0:
                break
            room -= excess
        else:
            prompt = prompt[:max_length - len(response)]
        if cut:
            counts["sources_truncated"] = counts.get("sources_truncated", 0) + 1
        return {"input_ids": prompt + response, "prompt_len": len(prompt), "source_text": source[:SAMPLE_CHARS],
                "reference": target}

    def encode_frame(self, tokenizer, df, max_length: int) -> EncodedSplit:
        if "target" not in df.columns:
            raise ConfigError("task 'sft' trains on (prompt, response) pairs; this data has texts only. Make pairs "
                              "with tk.data.from_pairs(...) or use tk.data.bbc_headlines()")
        counts: dict[str, int] = {}
        examples = [self.encode_pair(tokenizer, s, t, max_length, counts) for s, t in zip(df["text"], df["target"])]
        split = EncodedSplit([e.pop("input_ids") for e in examples], None, tokenizer.pad_token_id,
                             self._collate(tokenizer.pad_token_id), extras=examples)
        split.truncated = counts
        return split

    def encode(self, tokenizer, texts, labels, max_length: int) -> EncodedSplit:
        raise ConfigError("task 'sft' trains on (prompt, response) pairs, not on texts alone: give it a data set "
                          "made by tk.data.from_pairs(...) (or tk.data.bbc_headlines())")

    def _collate(self, pad_id: int):
        import functools
        return functools.partial(self.collate, pad_id=pad_id)

    def collate(self, examples: list[dict], pad_id: int) -> dict:
        """Padded ids and mask; ``labels`` -100 except over the responses; the prompts left-padded
        for generation; the reference and source texts (UTF-8 bytes) for scoring and showing."""
        ids, mask = pad([e["input_ids"] for e in examples], pad_id)
        labels = ids.masked_fill(mask == 0, -100)
        for j, e in enumerate(examples):
            labels[j, :e["prompt_len"]] = -100
        gen_ids, gen_mask = pad_left([e["input_ids"][:e["prompt_len"]] for e in examples], pad_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "gen_input_ids": gen_ids,
                "index": torch.tensor([e["index"] for e in examples]),
                "gen_attention_mask": gen_mask, "reference": text_tensor([e["reference"] for e in examples]),
                "source_text": text_tensor([e["source_text"] for e in examples])}

    def module(self, backbone) -> SFTModule:
        if not hasattr(self, "eos_id"):
            self.bind(backbone.tokenizer)
        return SFTModule(backbone.hf, self.head_name(backbone.hf), backbone.tokenizer, self.generation, self.eos_id)

    def metrics(self) -> GenerationMetrics:
        return GenerationMetrics(self.generation["examples"])

    def build(self, path: str, **kwargs) -> Any:
        try:
            return super().build(path, **kwargs)
        except ConfigError as e:
            raise ConfigError(str(e).replace("task 'causal_lm'", "task 'sft'")) from None
