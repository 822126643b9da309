"""Slices compression breaks: groups no attribute names, found from dense embeddings.

The method is Domino's error-aware mixture (Eyuboglu et al., ICLR 2022), fitted to what
*compression changed* rather than to one model's errors, with a sample split so that
the slices' tests are honest:

1. **Reduce** the (N, D) embeddings: standardize every column, PCA to ``pca_dims``
   (whitened, seeded), so every kept direction has unit variance.
2. **Change per example** for each compressed variant: the share of replica pairs k
   where compressed replica k is wrong and dense replica k right, minus the share where
   it is the other way round (pairs by replica id, as :mod:`._pair_inference` pairs
   them; that equals the compressed minus the dense error share of the example). When
   the replica ids do not pair, the modal predictions are compared instead.
3. **Split** the examples, stratified by label and seeded, into a *discovery* part and
   a *test* part. A diagonal Gaussian mixture (scikit-learn ``GaussianMixture``) is
   fitted on the discovery part to ``[embedding, error_weight * change, label_weight *
   one-hot label]``. Every example is then put in the component of highest posterior
   under the mixture's *embedding marginal* only (means, variances and weights of the
   embedding dimensions): membership is a function of the embedding, never of the
   outcome that is tested.
4. **Test** each slice on the test part only: its dense and compressed error and their
   change, with the seed-aware paired inference of subgroups (the slice id is a
   grouping column of :func:`~compaudit.analysis.subgroups.subgroup_cells`), intervals
   kept in [-1, 1], Benjamini-Hochberg q-values across the variant's slices. Slices
   are ranked by the change, largest first: slice 0 is the one compression hurt most.
5. **Describe** each slice over all its members: size, label mix, each protected
   attribute value's share against the whole set (over-index), and the ``typical``
   members of highest embedding posterior (:mod:`compaudit.analysis._slice_description`).

Because the mixture never sees the test part, a slice's test is the test of a fixed
group of examples, as for an annotated subgroup; the price is that only the test part
(``1 - discovery_fraction``) measures the change. See ``docs/statistics.md``
("Slices compression breaks") for the calibration on planted slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from compaudit.analysis._cells import subgroup_cells
from compaudit.analysis._pair_inference import PAIRED, draws, infer
from compaudit.analysis._slice_description import TYPICAL_COLUMNS, describe, typical_members
from compaudit.analysis._subgroup_sums import subgroup_sums
from compaudit.analysis.pie import modal_prediction
from compaudit.analysis.population import Population
from compaudit.analysis.stats import RATE_CHANGE, benjamini_hochberg
from compaudit.analysis.subgroups import comparison_method
from compaudit.config import Checked, setting
from compaudit.errors import AuditInputError

__all__ = ["MEMBER_COLUMNS", "SliceOptions", "SliceResult", "TABLE_COLUMNS", "TYPICAL_COLUMNS",
           "example_change", "find_slices", "reduce_embeddings", "split_discovery"]

#: Columns of :attr:`SliceResult.table`, in order.
TABLE_COLUMNS = ["variant", "slice", "n", "n_test", "dense_error", "compressed_error",
                 "change", "change_lo", "change_hi", "change_se", "change_df", "p", "q",
                 "label_mix", "over_index", "description"]
MEMBER_COLUMNS = ["variant", "slice", "example_id"]
#: The grouping column the slice ids take in the test part's examples.
_SLICE = "slice"
#: Variance added to every mixture column (the embedding's are whitened to 1).
REG_COVAR = 0.1
#: Mixture fits from different k-means starts; the best likelihood is kept.
N_INIT = 1
#: PCA directions with less variance than this share of the largest are dropped
#: (a rank-deficient embedding would otherwise be whitened by dividing by zero).
_RANK_TOL = 1e-10


@dataclass(frozen=True)
class SliceOptions(Checked):
    """Settings of :func:`find_slices`.

    Parameters
    ----------
    n_slices
        Mixture components; components that no example falls in are dropped.
    pca_dims
        Embedding directions kept by PCA before the mixture (at most the embedding's
        width and rank).
    error_weight
        Weight of the per-example compression change in the mixture (Domino's weight
        on the predictions): larger gives purer slices, smaller more coherent ones.
    label_weight
        Weight of the one-hot label columns (one per class present). With hundreds of
        classes these columns outnumber the embedding's and the slices follow the
        labels; 0 leaves the labels out.
    discovery_fraction
        Share of the examples (per label) the mixture is fitted on; the rest test it.
    typical
        Most typical members (highest embedding posterior) kept per slice.
    level
        Confidence level of the intervals.
    seed
        Seed of the split, the PCA, the mixture and the bootstrap.
    about
        ``"procedure"``: with paired replicas the intervals cover seed-to-seed variation
        too; ``"models"``: only the examples (as :class:`~compaudit.analysis.AnalysisOptions`).
    """

    n_slices: int = setting(8, ge=1)
    pca_dims: int = setting(32, ge=1)
    error_weight: float = setting(10.0, ge=0)
    label_weight: float = setting(1.0, ge=0)
    discovery_fraction: float = setting(0.3, gt=0, lt=1)
    typical: int = setting(8, ge=0)
    level: float = setting(0.95, gt=0, lt=1)
    seed: int = setting(0, ge=0)
    about: Literal["procedure", "models"] = "procedure"


@dataclass(frozen=True)
class SliceResult:
    """What :func:`find_slices` found.

    Attributes
    ----------
    table
        One row per variant x slice (:data:`TABLE_COLUMNS`), ranked within a variant by
        ``change`` (largest first, undefined last); ``slice`` is that rank. ``n`` counts
        every member, ``n_test`` the members in the test part that the errors,
        ``change`` (compressed minus dense error, pooled over replicas), its interval,
        standard error, degrees of freedom (NaN: normal), ``p`` and ``q`` (BH across
        the variant's slices) come from. ``label_mix`` maps a label to its share in the
        slice, ``over_index`` maps ``attr=value`` to the value's share in the slice over
        its share in the whole set; ``description`` is one sentence.
    members
        variant, slice, example_id: every example, in exactly one slice per variant.
    typical
        variant, slice, rank, example_id: each slice's most typical members.
    method
        Per variant, how its changes were inferred (``kind``, ``about``, ``replicas``,
        ``note``, ``warning``), as :func:`~compaudit.analysis.subgroups.comparison_method`
        says.
    """

    table: pd.DataFrame
    members: pd.DataFrame
    typical: pd.DataFrame
    method: dict[str, dict[str, Any]] = field(default_factory=dict)


def find_slices(pop: Population, embeddings: np.ndarray, *,
                variants: Sequence[str] | None = None, attributes: Sequence[str] = (),
                options: SliceOptions = SliceOptions(), bootstrap: int = 1000,
                source: str = "embeddings") -> SliceResult:
    """Find the slices each compressed variant hurt most (see the module docstring).

    Parameters
    ----------
    pop
        The population of one shift's examples.
    embeddings
        (N, D) float array; row i embeds ``pop.examples`` row i (the dense population's
        penultimate features, for instance).
    variants
        Compressed variants to analyse; ``None``: all of them.
    attributes
        Protected attributes (names without ``attr.``) the descriptions report.
    options
        :class:`SliceOptions`.
    bootstrap
        Resamples of the paired example bootstrap (0: no intervals, p or q).
    source
        What error messages call the embeddings (a file name, say).

    Raises
    ------
    AuditInputError
        Naming every problem of the inputs at once: embeddings of the wrong shape or
        with non-finite values, unknown variants or attributes, more slices than
        discovery examples.

    Examples
    --------
    >>> from compaudit.simulate import simulate_slices
    >>> pop, emb, planted = simulate_slices(n_examples=1000, size=0.1, effect=0.3, seed=1)
    >>> res = find_slices(pop, emb, bootstrap=200)
    >>> top = res.members.query("slice == 0")["example_id"].isin(
    ...     pop.examples["example_id"][planted])
    >>> bool(top.mean() > 0.9)
    True
    """
    emb, names, attrs, discovery = _validated(pop, embeddings, variants=variants,
                                              attributes=attributes, options=options,
                                              bootstrap=bootstrap, source=source)
    # One BLAS/OpenMP thread: the fits are small (N x at most pca_dims + labels + 1), and
    # k-means' OpenMP threads on a busy machine ran 15x slower than one thread (measured
    # on 2 shared cores: 1.4 s vs 0.13 s per call of 2,000 examples).
    with threadpool_limits(limits=1):
        return _find_slices(pop, emb, names=names, attrs=attrs, discovery=discovery,
                            options=options, bootstrap=bootstrap)


def _find_slices(pop: Population, emb: np.ndarray, *, names: list[str], attrs: list[str],
                 discovery: np.ndarray, options: SliceOptions, bootstrap: int) -> SliceResult:
    """:func:`find_slices` on validated inputs."""
    reduced = reduce_embeddings(emb, dims=options.pca_dims, seed=options.seed)
    label_codes = np.unique(pop.labels, return_inverse=True)[1]
    onehot = np.eye(int(label_codes.max()) + 1)[label_codes]
    tables, members, typical = [], [], []
    method: dict[str, dict[str, Any]] = {}
    for name in names:
        change = example_change(pop, name)
        post, density = _embedding_posterior(reduced, change, onehot, discovery, options)
        assign = np.argmax(post, axis=1)
        table, method[name] = _slice_table(pop, name, assign, ~discovery, options,
                                           bootstrap)
        rank = {int(c): i for i, c in enumerate(table.pop("component"))}
        slice_of = np.array([rank[int(c)] for c in assign], np.int64)
        table = describe(table, pop, slice_of, attrs)
        tables.append(table[TABLE_COLUMNS])
        members.append(pd.DataFrame({"variant": name, "slice": slice_of,
                                     "example_id": pop.examples["example_id"].to_numpy()}))
        typical.append(typical_members(pop, name, assign, post, density, rank, options.typical))
    return SliceResult(
        table=pd.concat(tables, ignore_index=True),
        members=pd.concat(members, ignore_index=True).sort_values(
            ["variant", "slice"], kind="stable").reset_index(drop=True),
        typical=pd.concat(typical, ignore_index=True),
        method=method)


def _validated(pop: Population, embeddings: np.ndarray, *, variants: Sequence[str] | None,
               attributes: Sequence[str], options: SliceOptions, bootstrap: int,
               source: str) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """The embeddings as float64, the variants, the attributes and the discovery mask;
    raises one :class:`AuditInputError` listing every problem."""
    problems: list[str] = []
    n = len(pop.examples)
    arr = np.asarray(embeddings)
    emb = np.empty((0, 0))
    if arr.ndim != 2:
        problems.append(f"{source}: got an array of shape {arr.shape}; expected one row "
                        f"per example and one column per embedding dimension, ({n}, D)")
    elif arr.shape[0] != n:
        problems.append(f"{source}: got {arr.shape[0]} rows; expected {n}, one per "
                        "example of the analysed examples, in their order")
    elif arr.shape[1] == 0:
        problems.append(f"{source}: got 0 columns; expected at least one embedding "
                        "dimension")
    elif not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        problems.append(f"{source}: got values of type {arr.dtype}; expected numbers")
    else:
        emb = arr.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
        if len(bad):
            first = pop.examples["example_id"].iloc[int(bad[0])]
            problems.append(f"{source}: {len(bad)} row(s) hold NaN or infinite values, the "
                            f"first row {int(bad[0])} (example_id {first!r}); expected "
                            "finite numbers")
        elif n and not (emb != emb[0]).any():
            problems.append(f"{source}: every row is the same; expected embeddings that "
                            "vary between examples")
    names = list(pop.compressed if variants is None
                 else [variants] if isinstance(variants, str) else variants)
    unknown = [v for v in names if v not in pop.variants or v == pop.dense]
    if unknown:
        problems.append(f"variants: {unknown} are not compressed variants of the "
                        f"predictions; expected some of {pop.compressed}")
    elif not names:
        problems.append(f"variants: no compressed variant to compare with "
                        f"{pop.dense!r}; expected predictions of at least one")
    attributes = [attributes] if isinstance(attributes, str) else list(attributes)
    missing = [a for a in attributes if a not in pop.attributes]
    if missing:
        problems.append(f"attributes: {missing} are not columns of the examples "
                        f"(attr.<name>); expected some of {pop.attributes}")
    if not (isinstance(bootstrap, (int, np.integer)) and bootstrap >= 0):
        problems.append(f"bootstrap: got {bootstrap!r}; expected an integer >= 0")
    discovery = split_discovery(pop.labels, fraction=options.discovery_fraction,
                                seed=options.seed)
    n_disc = int(discovery.sum())
    if options.n_slices > n_disc:
        problems.append(
            f"SliceOptions.n_slices: got {options.n_slices}; expected at most the "
            f"{n_disc} discovery examples (discovery_fraction {options.discovery_fraction} "
            f"of {n}); lower n_slices or analyse more examples")
    elif n_disc == n:
        problems.append(f"SliceOptions.discovery_fraction: {options.discovery_fraction} "
                        f"of {n} examples leaves none to test the slices; expected a "
                        "smaller fraction or more examples")
    if problems:
        raise AuditInputError(problems)
    return emb, names, list(attributes), discovery


def split_discovery(labels: np.ndarray, *, fraction: float, seed: int) -> np.ndarray:
    """Seeded split stratified by label: ``True`` for the examples that fit the mixture.

    Each label contributes ``round(fraction * count)`` examples, chosen at random.
    """
    rng = np.random.default_rng([seed, 23])
    out = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        out[rng.permutation(idx)[: int(round(fraction * len(idx)))]] = True
    return out


def reduce_embeddings(emb: np.ndarray, *, dims: int, seed: int) -> np.ndarray:
    """Standardized, PCA-reduced and whitened embeddings (N, d), ``d <= dims``.

    Directions without variance (a rank below ``dims``) are dropped.
    """
    from sklearn.decomposition import PCA

    mean, sd = emb.mean(axis=0), emb.std(axis=0)
    x = (emb - mean) / np.where(sd > 0, sd, 1.0)
    k = min(dims, x.shape[1], x.shape[0])
    pca = PCA(n_components=k, random_state=seed, svd_solver="full").fit(x)
    var = np.asarray(pca.explained_variance_, dtype=np.float64)
    keep = var > _RANK_TOL * max(float(var.max(initial=0.0)), np.finfo(float).tiny)
    z: np.ndarray = np.asarray(pca.transform(x), dtype=np.float64)[:, keep]
    return z / np.sqrt(var[keep])


def example_change(pop: Population, variant: str) -> np.ndarray:
    """Per example: share of pairs compressed-wrong/dense-right minus the reverse.

    Replica k of ``variant`` pairs with dense replica k (same ids): the difference of
    the two shares equals the compressed minus the dense error share of the example.
    Without pairable ids, the modal predictions are compared (-1, 0 or 1).
    """
    dense, comp = pop.variants[pop.dense], pop.variants[variant]
    labels = pop.labels[None, :]
    if np.array_equal(dense.replicas, comp.replicas):
        d_wrong: np.ndarray = dense.pred != labels
        c_wrong: np.ndarray = comp.pred != labels
        worse: np.ndarray = (c_wrong & ~d_wrong).mean(axis=0)
        better: np.ndarray = (~c_wrong & d_wrong).mean(axis=0)
        change: np.ndarray = worse - better
        return change
    d_mode: np.ndarray = modal_prediction(dense.pred)[0] != pop.labels
    c_mode: np.ndarray = modal_prediction(comp.pred)[0] != pop.labels
    return c_mode.astype(np.float64) - d_mode.astype(np.float64)


def _embedding_posterior(reduced: np.ndarray, change: np.ndarray, onehot: np.ndarray,
                         discovery: np.ndarray, options: SliceOptions,
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Fit the error-aware mixture on the discovery part; the (N, K) posterior of every
    example under the mixture's embedding marginal, and its (N, K) log density under
    each component's embedding marginal."""
    from sklearn.mixture import GaussianMixture

    parts = [reduced]
    if options.error_weight > 0:
        parts.append(options.error_weight * change[:, None])
    if options.label_weight > 0:
        parts.append(options.label_weight * onehot)
    features = np.concatenate(parts, axis=1)
    gm = GaussianMixture(n_components=options.n_slices, covariance_type="diag",
                         random_state=options.seed, reg_covar=REG_COVAR,
                         n_init=N_INIT).fit(features[discovery])
    d = reduced.shape[1]
    mu = np.asarray(gm.means_)[:, :d]
    prec = 1.0 / np.asarray(gm.covariances_)[:, :d]
    # log N(z; mu_k, diag var_k), expanded so no (N, K, d) array is built.
    density: np.ndarray = -0.5 * ((reduced**2) @ prec.T - 2.0 * reduced @ (mu * prec).T
                                  + np.sum(mu**2 * prec, axis=1)
                                  - np.sum(np.log(prec), axis=1) + d * np.log(2.0 * np.pi))
    log_p = density + np.log(np.asarray(gm.weights_))
    post = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    return post / post.sum(axis=1, keepdims=True), density


def _slice_table(pop: Population, variant: str, assign: np.ndarray, test: np.ndarray,
                 options: SliceOptions, bootstrap: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per non-empty component, ranked: the errors and change on the test part."""
    sub = pop.subset(test)
    examples = pd.DataFrame({f"attr.{_SLICE}": assign[test]})
    pair = Population(examples=examples, labels=sub.labels, num_classes=pop.num_classes,
                      dense=pop.dense, variants={pop.dense: sub.variants[pop.dense],
                                                 variant: sub.variants[variant]})
    method = comparison_method(pair, options.about)
    pairs = method["kind"] == PAIRED
    cells = subgroup_cells(examples, [_SLICE], max_cells=options.n_slices + 1)
    sums = subgroup_sums(pair, cells=cells, positive_label=1, n_boot=bootstrap,
                         seed=options.seed, per_replica_boot=pairs)
    dense = draws(sums, variant=pop.dense, pairs=pairs)["accuracy"]
    comp = draws(sums, variant=variant, pairs=pairs)["accuracy"]
    # A change of error is the dense accuracy minus the compressed one.
    s = infer(lambda d, c: d - c, dense, comp, level=options.level, bounds=RATE_CHANGE)
    tested = {int(name.split("=", 1)[1]): i for i, name in enumerate(cells.names)
              if name != "overall"}
    components = np.unique(assign)
    nan = np.nan

    def at(values: np.ndarray, c: int) -> float:
        return float(values[tested[c]]) if c in tested else nan

    frame = pd.DataFrame({
        "variant": variant, "component": components,
        "n": np.bincount(assign, minlength=options.n_slices)[components],
        "n_test": np.bincount(assign[test], minlength=options.n_slices)[components],
        "dense_error": [1.0 - at(dense.point, c) for c in components],
        "compressed_error": [1.0 - at(comp.point, c) for c in components],
        **{col: [at(val, c) for c in components] for col, val in (
            ("change", s.estimate), ("change_lo", s.lo), ("change_hi", s.hi),
            ("change_se", s.se), ("change_df", s.df), ("p", s.p))}})
    frame["q"] = benjamini_hochberg(frame["p"].to_numpy(float))
    frame = frame.sort_values(["change", "component"], ascending=[False, True],
                              na_position="last", kind="stable").reset_index(drop=True)
    frame.insert(1, "slice", np.arange(len(frame), dtype=np.int64))
    return frame, method


