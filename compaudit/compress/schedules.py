"""Sparsity schedules for pruning during training.

Zhu & Gupta (2017), "To prune, or not to prune": between the begin step ``t0`` and the
end step ``t0 + nΔ`` the target sparsity rises as

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (nΔ))^3

fast at first, while there are many redundant weights, and slowly near the end. Before
``t0`` the target is ``s_i``, after the end step ``s_f``. Masks are recomputed every
``Δ`` steps (``frequency``) from ``t0`` to the end step. Unlike TensorFlow's
model_pruning, which skips the last update when ``end - begin`` is not a multiple of
the frequency, the end step is always an update step here, so training that reaches it
ends exactly at ``s_f``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from compaudit.errors import AuditInputError

__all__ = ["CubicSparsitySchedule"]


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True, kw_only=True)
class CubicSparsitySchedule:
    """The Zhu & Gupta cubic sparsity schedule.

    Parameters
    ----------
    final_sparsity
        ``s_f``, reached at ``end_step``.
    begin_step
        ``t0``, the first update step (optimizer steps count from 1).
    end_step
        ``t0 + nΔ``, the last update step; the mask is fixed after it.
    frequency
        ``Δ``, optimizer steps between mask updates.
    initial_sparsity
        ``s_i``, the target at ``t0``.

    Examples
    --------
    >>> s = CubicSparsitySchedule(final_sparsity=0.9, begin_step=0, end_step=100, frequency=10)
    >>> round(s.sparsity_at(50), 6)
    0.7875
    """

    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int
    initial_sparsity: float = 0.0

    def validate(
        self, where: str = "CubicSparsitySchedule", *, aliases: Mapping[str, str] | None = None
    ) -> None:
        """Raise :class:`AuditInputError` listing every invalid field.

        ``where`` and ``aliases`` (field name -> name shown) let a config that wraps the
        schedule report its own field names.
        """
        alias = dict(aliases or {})
        problems = []
        for name in ("initial_sparsity", "final_sparsity"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                problems.append(
                    f"{where}.{alias.get(name, name)}: expected a number in [0, 1), got {v!r}"
                )
        if not problems and self.initial_sparsity > self.final_sparsity:
            problems.append(
                f"{where}: initial sparsity {self.initial_sparsity} exceeds the final "
                f"sparsity {self.final_sparsity}; sparsity may only grow during training"
            )
        if not _is_int(self.begin_step) or self.begin_step < 0:
            problems.append(f"{where}.begin_step: expected an integer >= 0, got {self.begin_step!r}")
        if not _is_int(self.end_step) or (
            _is_int(self.begin_step) and self.end_step <= self.begin_step
        ):
            problems.append(
                f"{where}.end_step: expected an integer greater than begin_step "
                f"({self.begin_step!r}), got {self.end_step!r}"
            )
        if not _is_int(self.frequency) or self.frequency < 1:
            problems.append(
                f"{where}.frequency: expected an integer >= 1 (optimizer steps between "
                f"mask updates), got {self.frequency!r}"
            )
        if problems:
            raise AuditInputError(problems)

    def sparsity_at(self, step: int) -> float:
        """Target sparsity ``s_t`` at optimizer step ``step``."""
        if step <= self.begin_step:
            return float(self.initial_sparsity)
        if step >= self.end_step:
            return float(self.final_sparsity)
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
            1.0 - progress
        ) ** 3

    def is_update_step(self, step: int) -> bool:
        """Whether the mask is recomputed after optimizer step ``step``."""
        if step < self.begin_step or step > self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step

    def update_steps(self) -> list[int]:
        """All update steps >= 1, in order (steps count from 1)."""
        first = self.begin_step
        if first < 1:  # step 0 never happens; the next multiple of the frequency does
            first += self.frequency * -(-(1 - first) // self.frequency)
        steps = list(range(first, self.end_step + 1, self.frequency))
        if not steps or steps[-1] != self.end_step:
            steps.append(self.end_step)
        return steps
