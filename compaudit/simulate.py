"""Simulated populations in the two table contracts, for trying the analysis without models.

Each example gets a fixed difficulty, and every replica of a variant errs on it
independently with that probability, so modal predictions are stable across seeds the
way real populations are. A compressed variant can carry a *planted* harm: a higher
false-positive (or false-negative) probability inside one attribute cell. Tests use
it as a known answer (the cell must be found) and as a null (no harm planted: nothing
may be found); benchmarks use it for workloads of any size.

Trained replicas also differ by seed as a whole: ``replica_logit_sd`` gives every
replica of every variant its own offset, drawn from N(0, sd), on the logit of each
example's error probability (before any planted harm), so a null population with seed
variation has no effect of compression on average but differs pair by pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from compaudit.analysis._cells import cell_label
from compaudit.analysis.population import Population, VariantPredictions
from compaudit.references import CELEBA_TEST_JOINT  # re-exported: the old home

__all__ = ["PlantedHarm", "CELEBA_TEST_JOINT", "simulate_binary", "simulate_fixed_models",
           "simulate_multiclass", "simulate_slices"]


@dataclass(frozen=True)
class PlantedHarm:
    """Extra error probability for one variant inside one attribute cell.

    ``rate`` "fpr" raises the chance that a negative example of the cell is predicted
    positive by ``amount``; "fnr" does the same for positives predicted negative.
    """

    variant: str
    cell: dict[str, bool]
    rate: str = "fpr"
    amount: float = 0.2


def _scaled_counts(joint: dict[tuple, int], n: int) -> dict[tuple, int]:
    """Scale counts to sum to ``n`` by largest remainder."""
    keys = list(joint)
    raw = np.array([joint[k] for k in keys], float) * n / sum(joint.values())
    base = np.floor(raw).astype(int)
    rest = n - base.sum()
    base[np.argsort(-(raw - base), kind="stable")[:rest]] += 1
    return dict(zip(keys, base.tolist()))


def simulate_binary(
    *,
    n_examples: int = 20000,
    n_replicas: int = 5,
    variants: tuple[str, ...] = ("dense", "gmp-50", "gmp-90"),
    harms: tuple[PlantedHarm, ...] = (),
    error_rate: float = 0.06,
    replica_logit_sd: float = 0.0,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A CelebA-like binary task (Blond_Hair vs Male, Young) with a population per variant.

    ``replica_logit_sd`` > 0 adds a per-replica offset to the logit of every error
    probability (seed-to-seed variation; drawn from its own stream, so 0 reproduces
    the populations of earlier versions). Returns ``(examples, predictions)`` as
    DataFrames in the DESIGN.md contracts.
    """
    if not replica_logit_sd >= 0:
        raise ValueError(f"replica_logit_sd: got {replica_logit_sd}, expected >= 0")
    rng = np.random.default_rng(seed)
    offsets = (np.random.default_rng([seed, 1]).normal(
        0.0, replica_logit_sd, (len(variants), n_replicas)) if replica_logit_sd > 0 else None)
    counts = _scaled_counts(CELEBA_TEST_JOINT, n_examples)
    cells = np.repeat(np.arange(len(counts)), list(counts.values()))
    keys = np.array(list(counts), bool)[cells]
    label = keys[:, 0].astype(np.int64)
    examples = pd.DataFrame({
        "example_id": [f"sim/{i:06d}" for i in range(n_examples)],
        "label": label, "split": "test",
        "source_id": [f"sim/{i:06d}" for i in range(n_examples)],
        "shift": "clean", "severity": np.int8(0),
        "attr.Male": keys[:, 1], "attr.Young": keys[:, 2],
    })
    # Difficulty: most examples are easy, a tail is hard (mean ~= error_rate).
    difficulty = rng.beta(0.5, 0.5 * (1 - error_rate) / error_rate, n_examples)
    frames = []
    for v, variant in enumerate(variants):
        err = np.broadcast_to(difficulty, (n_replicas, n_examples)).copy()
        if offsets is not None:
            err = expit(logit(err) + offsets[v][:, None])
        for harm in harms:
            if harm.variant != variant:
                continue
            in_cell = np.ones(n_examples, bool)
            for attr, value in harm.cell.items():
                in_cell &= examples[f"attr.{attr}"].to_numpy() == value
            target = label == (0 if harm.rate == "fpr" else 1)
            err[:, in_cell & target] = np.minimum(err[:, in_cell & target] + harm.amount, 1.0)
        wrong = rng.random((n_replicas, n_examples)) < err
        pred = np.where(wrong, 1 - label, label)
        p_pred = 0.5 + 0.5 * rng.random((n_replicas, n_examples))
        p_pos = np.where(pred == 1, p_pred, 1 - p_pred).astype(np.float32)
        p_true = np.where(label == 1, p_pos, 1 - p_pos).astype(np.float32)
        frames.append(pd.DataFrame({
            "variant": variant,
            "replica": np.repeat(np.arange(n_replicas, dtype=np.int32), n_examples),
            "example_id": np.tile(examples["example_id"].to_numpy(), n_replicas),
            "pred": pred.ravel(), "p_true": p_true.ravel(), "p_pos": p_pos.ravel(),
        }))
    return examples, pd.concat(frames, ignore_index=True)


def simulate_multiclass(
    *,
    n_examples: int = 50000,
    num_classes: int = 1000,
    n_replicas: int = 30,
    variants: tuple[str, ...] = ("dense", "gmp-30", "gmp-50", "gmp-70", "gmp-90", "int8"),
    harmed_classes: int = 50,
    harm: float = 0.15,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """An ImageNet-like many-class population, as arrays (too large for DataFrames).

    Returns ``(examples, preds, top5)``: ``preds[variant]`` is (R, N) int32 and
    ``top5[variant]`` (R, N, 5) int32 whose first column is the top-1 prediction. The
    last compressed variants lose ``harm`` of recall on ``harmed_classes`` classes.
    """
    rng = np.random.default_rng(seed)
    label = np.arange(n_examples, dtype=np.int64) % num_classes
    examples = pd.DataFrame({"example_id": [f"sim/{i:06d}" for i in range(n_examples)],
                             "label": label})
    difficulty = rng.beta(0.6, 1.6, n_examples)
    confusable = (label + rng.integers(1, num_classes, n_examples)) % num_classes
    harmed = np.isin(label, rng.choice(num_classes, harmed_classes, replace=False))
    preds, top5 = {}, {}
    for k, variant in enumerate(variants):
        extra = harm * k / max(len(variants) - 1, 1)
        err = difficulty + np.where(harmed, extra, extra / 10)
        wrong = rng.random((n_replicas, n_examples)) < err
        noise = rng.integers(0, num_classes, (n_replicas, n_examples))
        other = np.where(rng.random((n_replicas, n_examples)) < 0.7, confusable, noise)
        other = np.where(other == label, (label + 1) % num_classes, other)
        pred = np.where(wrong, other, label).astype(np.int32)
        rest = (pred[..., None] + 1 + np.arange(4)) % num_classes
        preds[variant] = pred
        top5[variant] = np.concatenate([pred[..., None], rest.astype(np.int32)], axis=-1)
    return examples, preds, top5


def simulate_fixed_models(
    *,
    n_examples: int = 4000,
    dense_error: tuple[float, ...] = (0.05, 0.15, 0.30),
    harm: float = 0.10,
    harm_cell: tuple[str, bool] = ("Male", True),
    flip: float = 0.0,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple[str, str], float]]:
    """Fixed models with a known truth: a test set drawn from an infinite population.

    Every example carries a latent ``u ~ U(0, 1)``; dense model k errs on it when
    ``u < dense_error[k]`` (so the K models differ a lot but are fixed functions of the
    example), and its compressed model ``c`` errs when ``u < dense_error[k] + harm`` on
    the positives of ``harm_cell`` (a false-negative harm), and as dense elsewhere;
    ``flip`` > 0 makes ``c`` also change the prediction of that share of every other
    example (a second latent; errors then change both ways: FPR and FNR rise by
    ``flip * (1 - 2 * error)``). Attributes ``Male`` (p 0.4), ``Young`` (p 0.7) and the
    label (p 0.3) are independent, so the truth is known in closed form.

    Returns ``(examples, predictions, truth)``: ``truth[(rate, subgroup)]`` is the
    change of the pooled (mean over the K pairs) rate in the population, for ``fpr``
    and ``fnr`` and every subgroup of Male x Young, named as the analysis names them.
    """
    rng = np.random.default_rng(seed)
    n, k = n_examples, len(dense_error)
    male = rng.random(n) < 0.4
    young = rng.random(n) < 0.7
    label = (rng.random(n) < 0.3).astype(np.int64)
    u, v = rng.random(n), rng.random(n)
    ids = [f"fixed/{i:06d}" for i in range(n)]
    examples = pd.DataFrame({"example_id": ids, "label": label, "split": "test",
                             "source_id": ids, "shift": "clean", "severity": np.int8(0),
                             "attr.Male": male, "attr.Young": young})
    attr, value = harm_cell
    harmed = (examples[f"attr.{attr}"].to_numpy() == value) & (label == 1)
    frames = []
    for variant in ("dense", "c"):
        wrong = np.stack([u < e for e in dense_error])
        if variant == "c":
            wrong |= harmed & (u[None] < np.asarray(dense_error)[:, None] + harm)
            wrong ^= (v < flip)[None]
        pred = np.where(wrong, 1 - label, label)
        p_pos = np.where(pred == 1, 0.9, 0.1).astype(np.float32)
        frames.append(pd.DataFrame({
            "variant": variant, "replica": np.repeat(np.arange(k, dtype=np.int32), n),
            "example_id": np.tile(ids, k), "pred": pred.ravel(),
            "p_true": np.where(label == 1, p_pos, 1 - p_pos).ravel(), "p_pos": p_pos.ravel()}))
    mean_err = float(np.mean(dense_error))
    mean_harm = float(np.mean([min(e + harm, 1.0) - e for e in dense_error]))
    flip_shift = flip * (1 - 2 * mean_err)
    truth: dict[tuple[str, str], float] = {}
    share = {"Male": 0.4, "Young": 0.7}
    levels = [(a, b) for a in ("Male", "Young") for b in (True, False)]
    subgroups: list[dict[str, bool]] = [{}] + [{a: b} for a, b in levels] + [
        {"Male": m, "Young": y} for m in (True, False) for y in (True, False)]
    for cell in subgroups:
        name = cell_label(cell.items()) or "overall"
        # Share of the subgroup's positives in the harmed cell.
        p_harm = (float(cell[attr] == value) if attr in cell
                  else (share[attr] if value else 1 - share[attr]))
        # After the flip: a harmed positive that became wrong may be flipped back.
        truth[("fnr", name)] = p_harm * mean_harm * (1 - 2 * flip) + flip_shift
        truth[("fpr", name)] = flip_shift
    return examples, pd.concat(frames, ignore_index=True), truth


def simulate_slices(
    *,
    n_examples: int = 2000,
    size: float = 0.05,
    effect: float = 0.10,
    n_clusters: int = 8,
    dim: int = 16,
    separation: float = 6.0,
    n_replicas: int = 5,
    error_rate: float = 0.08,
    replica_logit_sd: float = 0.15,
    churn: float = 0.3,
    seed: int = 0,
) -> tuple[Population, np.ndarray, np.ndarray]:
    """A binary task with embeddings and one planted slice that compression breaks.

    Embeddings (``dim`` wide) are Gaussian clusters of unit variance: the planted slice
    is a cluster of ``round(size * n_examples)`` examples, the other examples fall in
    ``n_clusters`` clusters of random sizes; centres lie ``separation`` apart on average
    (random directions). Each cluster has its own positive rate (uniform in [0.2,
    0.8]); ``attr.Male`` is over-represented in the slice (0.75 vs 0.4), ``attr.Young``
    is not (0.7 everywhere). Every example has a difficulty (mean ``error_rate``, a
    hard tail, as :func:`simulate_binary`); dense replica k errs with it after an offset
    N(0, ``replica_logit_sd``) on the logit, compressed replica k after the same offset
    plus its own N(0, ``replica_logit_sd``) (seed noise of compression), and, inside the
    slice, with ``effect`` more probability. Pair k shares its uniform draws except on a
    share ``churn`` of the examples, where the compressed replica draws its own: as in
    real compression, a few predictions change both ways at an unchanged error rate.
    ``effect = 0`` is the null: compression changes nothing on average anywhere.

    Returns ``(population, embeddings, planted)``: variants ``dense`` and ``compressed``
    with replicas 0..K-1, the (N, dim) embeddings and the planted membership (N,) bool.
    """
    if not 0 < size < 1:
        raise ValueError(f"size: got {size}, expected a fraction in (0, 1)")
    if not 0 <= churn <= 1:
        raise ValueError(f"churn: got {churn}, expected a fraction in [0, 1]")
    if not 0 <= effect <= 1:
        raise ValueError(f"effect: got {effect}, expected an error rate in [0, 1]")
    rng = np.random.default_rng(seed)
    n_slice = int(round(size * n_examples))
    share = rng.dirichlet(np.full(n_clusters, 5.0))
    rest = np.floor(share * (n_examples - n_slice)).astype(int)
    rest[: n_examples - n_slice - rest.sum()] += 1
    cluster = rng.permutation(np.repeat(np.arange(n_clusters + 1), [n_slice, *rest]))
    planted = cluster == 0
    directions = rng.normal(size=(n_clusters + 1, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    # Two random near-orthogonal directions of length s / sqrt(2) lie about s apart.
    centres = separation / np.sqrt(2.0) * directions
    embeddings = centres[cluster] + rng.normal(size=(n_examples, dim))
    label = (rng.random(n_examples) < rng.uniform(0.2, 0.8, n_clusters + 1)[cluster]
             ).astype(np.int64)
    male = rng.random(n_examples) < np.where(planted, 0.75, 0.4)
    young = rng.random(n_examples) < 0.7
    ids = [f"slices/{i:06d}" for i in range(n_examples)]
    examples = pd.DataFrame({"example_id": ids, "label": label, "split": "test",
                             "source_id": ids, "shift": "clean", "severity": np.int8(0),
                             "attr.Male": male, "attr.Young": young})
    difficulty = rng.beta(0.5, 0.5 * (1 - error_rate) / error_rate, n_examples)
    difficulty = np.clip(difficulty, 1e-6, 1 - 1e-6)
    dense_offset = rng.normal(0.0, replica_logit_sd, (n_replicas, 1))
    comp_offset = dense_offset + rng.normal(0.0, replica_logit_sd, (n_replicas, 1))
    u = rng.random((n_replicas, n_examples))
    u_comp = np.where(rng.random(u.shape) < churn, rng.random(u.shape), u)
    err_dense = expit(logit(difficulty)[None] + dense_offset)
    err_comp = expit(logit(difficulty)[None] + comp_offset)
    err_comp = np.where(planted[None], np.minimum(err_comp + effect, 1.0), err_comp)
    replicas = np.arange(n_replicas)
    variants = {
        name: VariantPredictions(name, replicas, np.where(draw < err, 1 - label, label)
                                 .astype(np.int32))
        for name, draw, err in (("dense", u, err_dense), ("compressed", u_comp, err_comp))}
    pop = Population(examples=examples, labels=label, num_classes=2, dense="dense",
                     variants=variants)
    return pop, embeddings, planted
