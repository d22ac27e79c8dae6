"""benchmarks/method_comparison.py keeps working: ``--smoke`` trains every method on a tiny random BERT
(two seeds, a few steps) and writes its results as JSON; ``--causal-lm`` adds a tiny random Llama as a
language model. What is checked is what the script reports, not how fast: every method trained at the
budget it was given, an interval around each accuracy, a forgetting figure, the magnitude/direction
correlations of full fine-tuning, LoRA and DoRA, and a sentence about the DoRA paper's pattern that
agrees with them."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["probe", "freeze", "full", "lora", "dora", "pissa", "adalora", "loha", "lokr", "vera", "ia3", "ln_tuning",
           "prompt_tuning"]


def _run(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "methods.json"
    # this checkout's tunekit, whichever one the interpreter has installed
    path = os.pathsep.join([str(ROOT), *[p for p in [os.environ.get("PYTHONPATH")] if p]])
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TUNEKIT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "benchmarks/method_comparison.py", "--smoke", "--json", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return json.loads(out.read_text()), done.stdout


def test_every_method_at_its_budget_with_intervals_drift_and_the_dora_pattern(tmp_path):
    result, said = _run(tmp_path)
    c = result["classification"]
    assert [m["method"] for m in c["methods"]] == METHODS
    budget = {b["method"]: b for b in c["budget_table"]}
    assert budget["lora"]["trainable"] == c["budget"]
    assert budget["loha"]["trainable"] == c["budget"]  # a LoHa of rank r counts as a LoRA of rank 2r
    assert budget["pissa"]["trainable"] == c["budget"] and budget["dora"]["trainable"] > c["budget"]
    assert budget["full"]["x budget"] > 100 and budget["probe"]["x budget"] < 1
    for m in c["methods"]:
        assert m["trainable"] == budget[m["method"]]["trainable"] > 0
        assert 0 <= m["low"] <= m["accuracy"] <= m["high"] <= 1 and m["seeds"] == 2, m
        assert m["peak_memory_mb"] > 0 and m["ms_per_step"] > 0, m
        assert 0 < m["last_cka"] <= 1 + 1e-6 and 0 < m["mean_cka"] <= 1 + 1e-6, m
        if m["method"] != "lora":
            assert m["vs_lora_low"] <= m["vs_lora"] <= m["vs_lora_high"] and " vs lora-r2 at 32 examples" in m["vs_lora_said"]
    probe = next(m for m in c["methods"] if m["method"] == "probe")
    assert probe["mean_cka"] == probe["last_cka"] == 1.0  # a frozen backbone's states do not move
    runs = c["magnitude_direction"]
    assert sorted(r["method"] for r in runs) == ["dora", "dora", "full", "full", "lora", "lora"]
    for r in runs:
        assert r["qv_matrices"] == 4 and r["matrices"] >= r["qv_matrices"]  # 2 blocks x query, value
        if r["qv_r"] is not None:
            assert r["qv_low"] <= r["qv_r"] <= r["qv_high"]
            expected = "negative" if r["qv_high"] < 0 else "positive" if r["qv_low"] > 0 else "inside the noise"
            assert r["qv_sign"] == expected
    as_paper = all(r["qv_sign"] == {"full": "negative", "dora": "negative", "lora": "positive"}[r["method"]]
                   for r in runs)
    (pattern,) = [s for s in c["magnitude_direction_said"] if s.startswith("The DoRA paper's pattern")]
    assert ("was seen" in pattern) == as_paper, pattern
    assert pattern in said and "Paired with LoRA" in said and "Budget: LoRA rank 2" in said
    assert math.isfinite(result["total_s"]) and result["args"]["smoke"] is True
    page = (tmp_path / "methods.html").read_text()  # the figures side by side, beside the JSON
    for heading in ("Weight change per module (seed 0 of each method)", "Magnitude and direction of each update",
                    "Representation drift"):
        assert f"<h2>{heading}" in page, heading
    assert page.count("plotly-graph-div") >= 3 + 4 and "wrote the figures side by side" in said


def test_the_causal_lm_option(tmp_path):
    result, said = _run(tmp_path, "--causal-lm", "--methods", "probe,lora,dora,adalora,full")
    lm = result["causal_lm"]
    assert [m["method"] for m in lm["methods"]] == ["lora", "dora", "adalora", "full"]  # no probe for a language model
    assert lm["before"] > 1
    for m in lm["methods"]:
        assert m["seeds"] == 2 and m["low"] <= m["perplexity"] <= m["high"] and m["perplexity"] > 1, m
        assert m["other_low"] <= m["other_perplexity"] <= m["other_high"], m
        assert m["low"] < m["high"], m  # an interval over seeds and texts, not a point
    paired = {p["method"]: p for p in lm["paired_with_lora"]}
    assert sorted(paired) == ["adalora", "dora", "full"]
    for p in paired.values():
        assert p["low"] <= p["ratio"] <= p["high"] and p["other_low"] <= p["other_ratio"] <= p["other_high"]
        assert p["said"] in said and "over 8 texts x 2 seeds" in p["said"]
    assert "Test perplexity" in said and "Paired with LoRA (same seeds, same texts" in said
