"""Experiments: which strategy wins at which data size, with error bars.

    exp = tk.experiment([tk.Probe(), tk.Freeze.top(2), tk.LoRA(rank=8), tk.Full()], "rotten_tomatoes",
                        sizes=[100, 300, 1000], seeds=3, name="rt-transfer")
    exp.table()                      # one row per (strategy, size): mean, 95 % interval, seeds, cost
    exp.compare("LoRA r8", "full")   # the paired difference per size, with its interval

The grid is every (strategy, training-set size, seed). Each cell is an ordinary run record in
``runs_dir`` (listed, loaded, inspected and pruned like any other); the experiment's own record,
``runs_dir/<name>/``, holds ``experiment.json`` (the grid) and one file per trained cell under
``cells/`` (its run, its cost, and whether it got each test example right), written atomically as
the cell ends, so calling the same experiment again **resumes**: finished cells are not retrained,
a failed one is retried, and a kernel restart or a kill loses at most the cell in progress.

Fair by construction:

- for a seed, the training subsets are nested: the ``n`` examples are the first ``n`` of one
  seeded permutation of the training split (:func:`tunekit.evaluation.subset`), so the 100 are
  inside the 300 and a learning curve moves with the data, not with sampling noise;
- every cell is evaluated on the same validation subset while it trains, and reported on the same
  **test** split, which no training or choice saw;
- a seed seeds the model's new weights, the subset and the shuffling alike, for every strategy.

Statistics: per cell, the mean test accuracy over seeds with a 95 % interval from a two-level
percentile bootstrap (resample the seeds, then the test examples within each resampled seed;
:data:`BOOTSTRAP` resamples, seeded), so the interval holds both sources of noise. Between two
strategies, :meth:`Experiment.compare` takes the paired difference on the same seeds and the same
test examples, bootstrapped the same way, and says when it is inside the noise.

Learning rates: each strategy's default, one rate or one per strategy, or ``lr="tune"``: the same
small Optuna (TPE) search per strategy and size on the validation split, the test split kept out
of it (nested evaluation; the record keeps every trial).

The package: :mod:`~tunekit.experiments.record` (the record read as data: the table, the paired
differences, what to choose), :mod:`~tunekit.experiments.queue` (the cells as an Optuna study that
many workers pull from) and :mod:`~tunekit.experiments.runner` (:func:`experiment`: check the grid,
tune, fill the queue and train cells from it).
"""
from tunekit.experiments.record import (
           BOOTSTRAP,
           Experiment,
           bootstrap_mean,
           in_words,
           list_experiments,
           report_sections,
           table_with_intervals,
)
from tunekit.experiments.runner import experiment

__all__ = ["experiment", "Experiment", "list_experiments", "report_sections", "bootstrap_mean", "in_words",
           "table_with_intervals", "BOOTSTRAP"]
