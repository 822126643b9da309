"""Options of the analysis (:func:`compaudit.analysis.audit.analyze`): the reference
variant, protected attributes, inference settings and the bounds on the subgroups;
``[analysis]`` of an audit spec."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from compaudit.analysis.slice_audit import SliceSettings
from compaudit.analysis.subgroups import DEFAULT_MAX_CELLS
from compaudit.config import Checked, setting

__all__ = ["AnalysisOptions"]


@dataclass(frozen=True)
class AnalysisOptions(Checked):
    """Options of :func:`analyze`.

    Parameters
    ----------
    dense
        Name of the reference (uncompressed) variant.
    protected
        Protected attributes (names without ``attr.``); ``None`` takes every ``attr.*``
        column of the examples table.
    positive_label
        The class counted as positive in binary tasks (FPR, FNR, ...).
    bootstrap
        Bootstrap resamples for intervals and p-values; 0 turns the bootstrap off.
    seed
        Seed of the bootstrap.
    alpha
        Significance level for the ``significant_*`` flags.
    level
        Confidence level of every interval.
    num_classes
        Number of classes; inferred when ``None`` (2 when predictions carry ``p_pos``).
    shift
        Which ``shift`` of the examples the class, PIE and subgroup analyses use.
    max_intersection_order
        Largest number of attributes intersected into a subgroup (1: single attributes
        only). ``None``: every order with up to 4 protected attributes, else 2.
    min_cell_size
        Subgroups (other than ``overall``) with fewer examples are skipped: not
        analysed, listed in the ``skipped_subgroups`` table and counted in
        ``metrics.json`` under ``subgroup_cells.skipped``. The default 1 analyses every
        subgroup that has an example.
    max_cells
        Limit on the number of subgroups (overall and skipped ones included); more is an
        :class:`~compaudit.errors.AuditInputError`, raised before the analysis allocates
        per-subgroup arrays.
    screen_top
        Fraction of examples the pre-compression risk screen flags as at risk
        (:mod:`compaudit.analysis.screen`).
    slices
        Slice discovery settings (``[analysis.slices]``,
        :class:`~compaudit.analysis.slice_audit.SliceSettings`); slices are found when
        :func:`analyze` is given embeddings.
    about
        What the intervals are about. ``"procedure"`` (default): the compression
        method, so with paired replicas they cover seed-to-seed variation as well as
        the examples (:mod:`compaudit.analysis._pair_inference`). ``"models"``: the
        models at hand are fixed artifacts (a team's shipped files), so they cover the
        test examples only: the paired example bootstrap, pooled over the given pairs.
        ``compaudit run`` defaults to ``"models"`` when ``[model].weights`` or
        ``pretrained`` are the user's files.
    """

    dense: str = setting("dense", nonempty=True)
    protected: tuple[str, ...] | None = None
    positive_label: int = setting(1, ge=0)
    bootstrap: int = setting(1000, ge=0)
    seed: int = setting(0, ge=0)
    alpha: float = setting(0.05, gt=0, lt=1)
    level: float = setting(0.95, gt=0, lt=1)
    num_classes: int | None = setting(None, ge=2)
    shift: str = "clean"
    max_intersection_order: int | None = setting(None, ge=1)
    min_cell_size: int = setting(1, ge=1)
    max_cells: int = setting(DEFAULT_MAX_CELLS, ge=1)
    screen_top: float = setting(0.05, gt=0, le=1)
    about: Literal["procedure", "models"] = "procedure"
    slices: SliceSettings = setting(factory=SliceSettings)

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.protected is not None and len(set(self.protected)) != len(self.protected):
            yield "protected", f"got {list(self.protected)}; expected each attribute once"
