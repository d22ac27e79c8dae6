"""Weight change and update spectra for every matrix of the built-in MiniLM.

Target (issue 3): both within 2 s on 2 CPU cores, for a trained run whose base
checkpoint is already loaded (the first call also loads the checkpoint once, ~3 s;
that is printed separately). Reference measured in the same run: the same spectra
through full float64 SVDs (torch.linalg.svd / svdvals) instead of the Gram route.

    python benchmarks/bench_weights.py
"""
from __future__ import annotations

import tempfile
import time
import warnings

import torch

import tunekit as tk
from tunekit.inspect import weights as W


def main() -> None:
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    data = tk.data.rotten_tomatoes()
    with tempfile.TemporaryDirectory() as runs_dir:
        [full] = tk.compare([tk.Full()], data, train_size=64, eval_size=32, runs_dir=runs_dir, progress=False)
        t = time.perf_counter()
        W.weight_change([full])
        cold = time.perf_counter() - t

        pairs = tk.inspect.load_pairs([full])  # what the report does: one (start, result) pair per run
        W.weight_change(pairs)
        t = time.perf_counter()
        wc = W.weight_change(pairs)
        t_change = time.perf_counter() - t
        t = time.perf_counter()
        sp = W.update_spectra(pairs)
        t_spectra = time.perf_counter() - t

        # reference: the same quantities with full SVDs in float64
        deltas = W.weight_deltas(full)
        mats = [(w0, d) for n, (w0, d) in deltas.items() if w0.ndim == 2 and not n.startswith("bert.embeddings")]
        t = time.perf_counter()
        for w0, d in mats:
            s = torch.linalg.svdvals(d.double())
            W.effective_rank(s), W.stable_rank(s), W.energy_rank(s)
            u = torch.linalg.svd((w0 + d).double(), full_matrices=False).U[:, :10]
            u0 = torch.linalg.svd(w0.double(), full_matrices=False).U
            (u.T @ u0).abs().max(1)
            torch.linalg.svdvals(torch.randn(d.shape, dtype=torch.float64))
        t_ref = time.perf_counter() - t

    n = len(sp.table)
    total = t_change + t_spectra
    print(f"device: {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(f"weight_change, first call (loads the run's start):    {cold:6.2f} s")
    print(f"weight_change, {len(wc)} modules:                      {t_change:6.2f} s")
    print(f"update_spectra, {n} matrices (ranks, intruders, noise): {t_spectra:6.2f} s")
    print(f"weight change + spectra: {total:.2f} s   target <= 2.00 s   {'OK' if total <= 2 else 'MISSED'}")
    print(f"reference (full float64 SVDs, same matrices): {t_ref:.2f} s   "
          f"ratio reference / tunekit spectra = {t_ref / t_spectra:.1f}x")


if __name__ == "__main__":
    main()
