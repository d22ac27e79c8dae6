"""Knowledge distillation: a smaller student learns from a tuned teacher.

    tk.distil(teacher_run, student=[0, 2, 4])                      # DistilBERT-style, KL at T=2
    tk.distil(teacher_run, student=[0, 2, 4], loss=["response", "feature"], baseline=True)
    tk.distil(teacher_run, student=tk.load_model(path, label_names=...), loss={"response": 1, "relation": 0.5})

The student is a list of the teacher's block indices to initialise from (the teacher's
model with only those blocks; Sanh et al. 2019, "DistilBERT, a distilled version of BERT",
took every second layer), or any loaded model with the same tokenizer and labels.

Losses, each with a weight, added to the hard-label loss (weight ``hard``):

* ``"response"``: the KL divergence between the teacher's and the student's outputs
  softened at temperature ``T``, scaled by ``T**2`` so its gradients keep their size as T
  changes (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural Network";
  as in DistilBERT). For a language model, over every real token's next-token distribution.
* ``"feature"``: the mean squared error between matched blocks' hidden states (student
  block i with the teacher block it was made from, or spread evenly over the teacher's
  blocks), through one learned projection where the widths differ (Jiao et al. 2020,
  "TinyBERT: Distilling BERT for Natural Language Understanding").
* ``"relation"``: relational knowledge distillation on the examples' mean-pooled final
  hidden states: their pairwise distances (normalised by the mean) and the angles of
  every triplet, matched with a Huber loss; distance and angle weighted 1 : 2 (Park, Kim,
  Lu and Cho 2019, "Relational Knowledge Distillation").

Every term is exactly zero when the student is the teacher. The distillation loss is the
task module's loss: :class:`DistillationModule` wraps the student's module, so the engine
trains it like any other run (events, records, cancellation, several processes). The
record is a ``distil`` record whose ``parent`` is where the student's weights came from
(the teacher, with a ``blocks`` step, for a block subset) and whose ``teacher`` names the
teacher. ``baseline=True`` trains the same student on the same data and seed with the
hard-label loss alone, to show what the teacher added.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tunekit import structure as st
from tunekit.config import ConfigError, plain_arguments
from tunekit.data import match_labels
from tunekit.engine import Trainer
from tunekit.models import Model
from tunekit.post.base import Source, copy_model, latency_ms, latency_texts, measure, refuse_quantized
from tunekit.runs import Run, load_run
from tunekit.strategies.base import Plan, Strategy
from tunekit.tasks.base import TaskOutput

LOSSES = ("response", "feature", "relation")


# ----- the losses, as plain functions ---------------------------------------------------------------------
def response_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over examples (or,
    with ``mask`` [batch, tokens], over the real tokens of a language model's logits)."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per = (t.exp() * (t - s)).sum(-1)  # KL per example / per token
    if mask is not None:
        m = mask.to(per.dtype)
        return (per * m).sum() / m.sum().clamp_min(1.0) * temperature ** 2
    return per.mean() * temperature ** 2


def feature_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                 mask: torch.Tensor, projection: Optional[nn.Module] = None) -> torch.Tensor:
    """Mean over matched layers of the MSE between (projected) student and teacher hidden
    states [batch, tokens, width], over real tokens."""
    m = mask.unsqueeze(-1).float()
    total = 0.0
    for hs, ht in zip(student_hidden, teacher_hidden):
        hs = hs.float() if projection is None else projection(hs.float())
        sq = ((hs - ht.float()) ** 2 * m).sum() / (m.sum().clamp_min(1.0) * ht.shape[-1])
        total = total + sq
    return total / max(len(student_hidden), 1)


def _distances(x: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(x, x)
    off = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    mean = d[off].mean() if off.any() else d.new_tensor(1.0)
    return d / mean.clamp_min(1e-12)


def _angles(x: torch.Tensor) -> torch.Tensor:
    e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)  # e[j, i] = (x_i - x_j) / |.|
    return torch.bmm(e, e.transpose(1, 2))  # [j, i, k]: cos of the angle at j


def relation_loss(student: torch.Tensor, teacher: torch.Tensor, distance_weight: float = 1.0,
                  angle_weight: float = 2.0) -> torch.Tensor:
    """RKD: Huber loss between the students' and the teachers' normalised pairwise distances
    and triplet angles, over one batch of example embeddings [batch, width]."""
    s, t = student.float(), teacher.float()
    if len(s) < 3:
        return s.sum() * 0.0
    loss = distance_weight * F.smooth_l1_loss(_distances(s), _distances(t))
    return loss + angle_weight * F.smooth_l1_loss(_angles(s), _angles(t))


# ----- the module the engine trains ---------------------------------------------------------------------------
def _mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class _Capture:
    """Keeps the outputs of some blocks during one forward pass."""

    def __init__(self, blocks: Sequence[nn.Module]):
        self.outputs: list[torch.Tensor] = [None] * len(blocks)
        self.handles = [b.register_forward_hook(self._hook(i)) for i, b in enumerate(blocks)]

    def _hook(self, i: int):
        def hook(_mod, _args, out):
            self.outputs[i] = out[0] if isinstance(out, (tuple, list)) else out
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class DistillationModule(nn.Module):
    """The student's task module plus a frozen teacher: ``forward(batch)`` returns the
    student's logits and ``hard * task loss + sum of weight * distillation term``."""

    def __init__(self, student: nn.Module, teacher: nn.Module, weights: dict[str, float], hard: float,
                 temperature: float, student_blocks: Sequence[nn.Module], teacher_blocks: Sequence[nn.Module],
                 causal: bool, projection: Optional[nn.Module] = None, response_only: bool = False):
        super().__init__()
        self.response_only = response_only  # sft: the response term over the positions that predict the response
        self.student = student
        self.teacher = teacher
        self.projection = projection
        self.weights = dict(weights)
        self.hard = float(hard)
        self.temperature = float(temperature)
        self.causal = causal
        self._student_blocks = list(student_blocks)
        self._teacher_blocks = list(teacher_blocks)
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.last_terms: dict[str, float] = {}

    # the student's attributes, for code that reads them off model.module
    pooling = property(lambda self: getattr(self.student, "pooling", None),
                       lambda self, v: setattr(self.student, "pooling", v))
    pools_itself = property(lambda self: getattr(self.student, "pools_itself", False))
    head_name = property(lambda self: getattr(self.student, "head_name", None))

    def head(self) -> nn.Module:
        return self.student.head()

    def features(self, input_ids, attention_mask):
        return self.student.features(input_ids, attention_mask)

    def generate_samples(self, batch: dict, n: int) -> list[dict]:
        """The student's generations (a text-to-text task's evaluation)."""
        return self.student.generate_samples(batch, n)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher is fixed: no dropout, ever
        return self

    def forward(self, batch: dict) -> TaskOutput:
        need_hidden = bool(self.weights.get("feature") or self.weights.get("relation"))
        caps = (_Capture(self._student_blocks), _Capture(self._teacher_blocks)) if need_hidden else None
        try:
            out = self.student(batch)
            with torch.no_grad():
                teacher_out = self.teacher(batch)
        finally:
            if caps is not None:
                for c in caps:
                    c.remove()
        mask = batch["attention_mask"]
        loss = out.logits.new_zeros((), dtype=torch.float32)
        if self.hard and out.loss is not None:
            loss = loss + self.hard * out.loss.float()
        terms = {}
        if self.weights.get("response"):
            where = mask if self.causal else None
            if self.response_only and batch.get("labels") is not None:  # position t predicts token t + 1
                labels = batch["labels"]
                where = torch.zeros_like(mask)
                where[:, :-1] = (labels[:, 1:] != -100).to(mask.dtype)
            terms["response"] = response_loss(out.logits, teacher_out.logits, self.temperature, where)
        if self.weights.get("feature"):
            terms["feature"] = feature_loss(caps[0].outputs, caps[1].outputs, mask, self.projection)
        if self.weights.get("relation"):
            terms["relation"] = relation_loss(_mean_pool(caps[0].outputs[-1], mask),
                                              _mean_pool(caps[1].outputs[-1], mask))
        for k, v in terms.items():
            loss = loss + self.weights[k] * v
        return TaskOutput(loss, out.logits, out.count)


# ----- the strategy the student trains with ------------------------------------------------------------------
@dataclass
class Distillation(Strategy):
    """Every student parameter trains, and the feature loss's projection with them. Made by
    :func:`distil`; not in the registry (it needs a teacher)."""

    loss: dict = field(default_factory=dict)
    hard: float = 1.0
    temperature: float = 2.0
    projection: Any = field(default=None, repr=False, compare=False)

    name = "distil"
    default_lr = 1e-4

    def plan(self, model) -> Plan:
        return Plan(train=tuple(model.active_groups))

    def param_groups(self, model, lr: float, weight_decay: float) -> list[dict]:
        groups = super().param_groups(model, lr, weight_decay)
        if self.projection is not None:
            groups.append({"params": list(self.projection.parameters()), "lr": lr, "weight_decay": 0.0})
        return groups

    def describe(self) -> dict:
        return {"name": self.name, "loss": dict(self.loss), "hard": self.hard, "temperature": self.temperature}

    @property
    def label(self) -> str:
        if not self.loss:
            return "student-alone"
        return "distil-" + "+".join(sorted(self.loss))


def parse_losses(loss: Any) -> dict[str, float]:
    """``"response"``, ``["response", "feature"]`` or ``{"response": 1.0, ...}`` -> ``{name: weight}``."""
    if loss is None:
        return {}
    given = loss
    if isinstance(loss, str):
        loss = [part.strip() for part in loss.replace(",", "+").split("+") if part.strip()]
    if isinstance(loss, (list, tuple, dict)) and not loss:
        raise ConfigError(f"loss must name at least one term from {LOSSES} (got {given!r}); for none, "
                          f"loss=None trains the student on the labels alone")
    if isinstance(loss, (list, tuple)):
        loss = {name: 1.0 for name in loss}
    if not isinstance(loss, dict):
        raise ConfigError(f"loss must be a name, a list of names or a dict of weights from {LOSSES} (got {loss!r})")
    out = {}
    for name, w in loss.items():
        if name not in LOSSES:
            raise ConfigError(f"loss must name terms from {LOSSES} (got {name!r})")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"loss weight of {name!r} must be a number >= 0 (got {w!r})")
        if w > 0:
            out[name] = float(w)
    return out


def layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Teacher block matched with each student block when they are spread evenly (TinyBERT's
    uniform mapping): student block i with teacher block ``round((i + 1) * m / n) - 1``."""
    return [max(0, round((i + 1) * n_teacher / n_student) - 1) for i in range(n_student)]


def _same_tokenizer(a, b) -> bool:
    if a.vocab_size != b.vocab_size or a.pad_token_id != b.pad_token_id:
        return False
    probe = "The film was a quiet, well-acted surprise."
    return a(probe)["input_ids"] == b(probe)["input_ids"]


def student_model(teacher: Model, student: Any) -> tuple[Model, list[int]]:
    """The student and, per student block, the teacher block it is matched with."""
    if isinstance(student, Model):
        if student.task.name != teacher.task.name:
            raise ConfigError(f"student: the teacher's task is {teacher.task.name!r} but the student's is "
                              f"{student.task.name!r}")
        if teacher.task.name == "classification" and student.label_names != teacher.label_names:
            raise ConfigError(f"student: its labels {student.label_names} differ from the teacher's "
                              f"{teacher.label_names}; load it with label_names={teacher.label_names}")
        if not _same_tokenizer(student.tokenizer, teacher.tokenizer):
            raise ConfigError("student: it must share the teacher's tokenizer (both read the same token ids)")
        if student.peft is not None:
            raise ConfigError("student: give a plain model (no adapter attached)")
        return student, layer_map(student.num_blocks, teacher.num_blocks)
    if isinstance(student, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in student):
        model = copy_model(teacher)
        st.apply_steps(model, [{"blocks": list(student)}])
        return model, list(student)
    raise ConfigError(f"student must be a list of the teacher's block indices (e.g. [0, 2, 4]) or a model "
                      f"from tk.load_model (got {student!r})")


@plain_arguments
def distil(teacher: Any, student: Any = (0, 2, 4), loss: Any = "response", *, hard: float = 1.0,
           temperature: float = 2.0, data: Any = None, baseline: bool = False, name: Optional[str] = None,
           callbacks: Optional[dict] = None, **train_overrides) -> Run | tuple[Run, Run]:
    """Distil a tuned teacher run into a student and write a ``distil`` record.

    Args:
        teacher: the teacher: a :class:`~tunekit.runs.Run` or its directory.
        student: the teacher's block indices to keep (e.g. ``[0, 2, 4]`` of 6), or a model
            from ``tk.load_model`` with the same tokenizer (and labels, for classification).
        loss: the distillation terms, ``"response"``, ``"feature"``, ``"relation"``, a
            combination (``"response+feature"``, a list) or ``{name: weight}``; None for none.
        hard: the weight of the task's own loss on the labels (0 turns it off).
        temperature: the softening temperature of the response loss (> 0).
        data: the training data (default: the teacher's built-in data set).
        baseline: also train the same student without a teacher (hard-label loss only), on
            the same data and seed; then ``(distilled, baseline)`` is returned.
        callbacks: ``{event name: fn or [fn, ...]}`` given to the :class:`~tunekit.engine.Trainer`
            of each student (see :mod:`tunekit.engine`): follow its ``step`` events, or end it
            early by raising :class:`~tunekit.engine.StopTraining` (or ``ev.trainer.stop()``).
            A stopped student keeps its partial record, marked stopped and measured like the
            others. With ``baseline=True`` they follow the baseline's training too.
        train_overrides: :class:`~tunekit.config.TrainConfig` fields (``epochs``, ``lr`` ...);
            by default the teacher's seed, max_length, train_size and eval_size.

    Every record gets the same measurements as the other post-training records (metrics,
    ``params``, ``size_mb``, ``latency_ms``), the teacher's under ``summary["teacher"]``.
    """

    weights = parse_losses(loss)
    if isinstance(hard, bool) or not isinstance(hard, (int, float)) or not math.isfinite(hard) or hard < 0:
        raise ConfigError(f"hard must be a number >= 0 (got {hard!r})")
    if not weights and not hard:
        raise ConfigError("nothing to learn from: give a distillation loss or hard > 0")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
        raise ConfigError(f"temperature must be a finite number > 0 (got {temperature!r})")
    try:
        teacher_run = teacher if isinstance(teacher, Run) else load_run(teacher)
    except Exception as e:  # noqa: BLE001 - one clear message for whatever is not a run
        raise ConfigError(f"teacher must be a run (a Run or its directory): {e}") from e
    refuse_quantized(teacher_run)
    data = teacher_run.dataset(data)
    teacher_model = teacher_run.load_model(merged=True)
    if teacher_model.task.name == "classification":
        data = match_labels(data, teacher_model.label_names)
    student, matched = student_model(teacher_model, student)
    train_cfg = teacher_run.config.get("train", {})
    defaults = {k: train_cfg[k] for k in ("seed", "max_length", "train_size", "eval_size", "batch_size")
                if train_cfg.get(k) is not None}
    defaults["runs_dir"] = str(teacher_run.path.parent)
    overrides = {**defaults, **train_overrides}
    src = Source(teacher_model, teacher_run, data, dict(train_cfg))
    teacher_measured = measure(teacher_model, src, evaluate=False, latency=False)
    teacher_ref = {"name": teacher_run.name, "path": str(teacher_run.path.resolve())}

    def one(weights_: dict, hard_: float, model: Model, run_name: Optional[str]) -> Run:
        projection = None
        if weights_.get("feature") and model.hidden_size != teacher_model.hidden_size:
            projection = nn.Linear(model.hidden_size, teacher_model.hidden_size, bias=False)
        strategy = Distillation(weights_, hard_, temperature, projection)
        plain = model.module
        if weights_:
            t_blocks = st.blocks(teacher_model)
            model.module = DistillationModule(plain, teacher_model.module, weights_, hard_, temperature,
                                              list(st.blocks(model)), [t_blocks[i] for i in matched],
                                              causal=model.task.name != "classification", projection=projection,
                                              response_only=model.task.pairs)
        kind = "distil" if weights_ else "train"
        record = {"kind": kind, "teacher": teacher_ref,
                  "distillation": {"loss": weights_, "hard": hard_, "temperature": temperature,
                                   "matched_teacher_blocks": matched}}
        try:
            run = Trainer(model, data, strategy, callbacks=callbacks, record=record,
                          **{**overrides, **({"name": run_name} if run_name else {})}).run()
        finally:
            model.module = plain
        measured = measure(model, Source(model, run, data, dict(run.config.get("train", {}))), evaluate=False,
                           latency=False)
        lt, ls = latency_ms([teacher_model, model], latency_texts(src), src.train.get("max_length") or 128)
        run.update_summary(**measured, **ls, teacher={**teacher_measured, **lt, **{
            k: v for k, v in teacher_run.summary.items() if k.startswith("val_")}})
        return Run(run.path, model=model)

    base_student = None
    if baseline:
        base_student = copy_model(student)
    distilled = one(weights, hard, student, name)
    if not baseline:
        return distilled
    alone = one({}, hard or 1.0, base_student, None if name is None else f"{name}-alone")
    return distilled, alone
