"""Audit specs: TOML in ``audits/`` → the stages' own config objects, validated.

Each section builds the config its stage uses, with one coercer
(:func:`compaudit.config.from_table`): ``[train]`` builds a
:class:`~compaudit.configs.train.TrainConfig`, ``[analysis]`` the analysis
options, ``[[variants]]`` each compression method's config
(:data:`compaudit.configs.compress.METHODS`), ``[dissection]`` a
:class:`~compaudit.configs.dissection.DissectionConfig`, ``[gate]`` the
:class:`~compaudit.gate.policy.GatePolicy`, ``[predict]`` the inference batch size.
Every setting has one default, declared where its field is. Every mistake is
collected and reported at once, each naming the file, the key and what was expected,
before anything runs; parsing imports no torch.
See ``audits/demo.toml`` for an annotated example of every section.

The sections' own classes (``DataSpec``, ``ModelSpec``, ...) are declared in
:mod:`compaudit._spec_sections` and the checks of the files a spec names in
:mod:`compaudit._spec_files`; this module builds them into one :class:`AuditSpec`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from compaudit._spec_files import file_problems, with_files
from compaudit._spec_sections import (
    AuditSection,
    DataSpec,
    ExecutorSpec,
    ModelSpec,
    PredictSpec,
    ShiftSpec,
    TrainSpec,
    VariantSpec,
    move_deprecated_keys,
)
from compaudit.analysis.options import AnalysisOptions
from compaudit.config import (
    SLUG_RULE,
    from_table,
    is_slug,
    parse_toml,
    plain,
    read_utf8,
)
from compaudit.configs.compress import METHODS
from compaudit.configs.dissection import DEFAULT_LAYERS, DissectionSpec
from compaudit.errors import AuditInputError
from compaudit.gate.policy import GatePolicy, policy_from_dict

__all__ = [
    "AuditSpec",
    "DataSpec",
    "ModelSpec",
    "TrainSpec",
    "VariantSpec",
    "ShiftSpec",
    "ExecutorSpec",
    "PredictSpec",
    "demo_spec",
    "load_spec",
    "parse_spec",
]


#: The keys of ``[analysis]``; the other analysis options come from [data] and [model].
ANALYSIS_KEYS = ("bootstrap", "positive_label", "alpha", "level", "seed",
                 "max_intersection_order", "about", "slices")
SECTIONS = ("audit", "data", "model", "train", "variants", "shifts", "analysis", "gate",
            "executor", "dissection", "predict")


@dataclass(frozen=True)
class AuditSpec:
    """A validated audit spec: one config object per stage."""

    name: str
    seed: int
    source: str
    text: str
    #: The spec's folder, absolute: relative input paths resolve against it.
    base: str
    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    variants: tuple[VariantSpec, ...]
    shifts: tuple[ShiftSpec, ...]
    analysis: AnalysisOptions
    gate: GatePolicy
    executor: ExecutorSpec
    dissection: DissectionSpec | None = None
    predict: PredictSpec = PredictSpec()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def section(self, name: str) -> Any:
        """A section as plain data, for cache keys."""
        return plain(getattr(self, name))


def _variants(items: Any, where: str, problems: list[str]) -> tuple[VariantSpec, ...]:
    if not isinstance(items, list) or not items:
        problems.append(f"{where}: [[variants]]: expected at least one compressed variant")
        return ()
    out: list[VariantSpec] = []
    seen: set[object] = set()
    for i, item in enumerate(items):
        at = f"{where}: [[variants]] #{i + 1}"
        if not isinstance(item, dict):
            problems.append(f"{at}: expected a table")
            continue
        name, method = item.get("name"), item.get("method")
        if not is_slug(name) or name == "dense":
            problems.append(f"{at}.name: got {name!r}; expected {SLUG_RULE}, other than "
                            "'dense'")
        elif name in seen:
            problems.append(f"{at}.name: {name!r} is used twice; expected unique names")
        seen.add(name)
        # A non-string (``method = ["gmp"]``) is refused like an unknown name, not hashed.
        if not isinstance(method, str) or method not in METHODS:
            problems.append(f"{at}.method: got {method!r}; expected one of "
                            f"{', '.join(METHODS.names())}")
            continue
        params = {k: v for k, v in item.items() if k not in ("name", "method")}
        config = from_table(METHODS.get(method).config, params, where=at, problems=problems)
        if config is not None:
            out.append(VariantSpec(name=str(name), method=method, config=config, params=params))
    return tuple(out)


def _cross_checks(parts: dict[str, Any], source: str) -> list[str]:
    """Rules that span sections (each section has already passed its own)."""
    data, model, dx = parts["data"], parts["model"], parts["dissection"]
    checks = []
    if dx is not None:
        checks += [
            (bool(dx.root) or dx.concepts == data.dataset, "[dissection].root",
             f"the folder of the {dx.concepts!r} concept masks (the data is "
             f"{data.dataset!r}, whose folder has none)"),
            (bool(dx.layers) or model.arch in DEFAULT_LAYERS, "[dissection].layers",
             f"module names of {model.arch!r} (no default layers for it)"),
        ]
    if any(sh.kind == "corruptions" for sh in parts["shifts"]):
        checks.append((data.image_size >= 32, "[data].image_size",
                       "at least 32 with corruption shifts (ImageNet-C corruptions need it)"))
    return [f"{source}: {key}: expected {what}" for ok, key, what in checks if not ok]


def _sections(doc: dict[str, Any], source: str, problems: list[str]) -> dict[str, Any]:
    """Build every section's config from the parsed TOML document."""
    def build(cls: type, name: str, **kw: Any) -> Any:
        return from_table(cls, doc.get(name, {}), where=f"{source}: [{name}]",
                          problems=problems, **kw)

    audit = build(AuditSection, "audit") or AuditSection()
    name = audit.name or Path(source).stem
    if not is_slug(name):
        problems.append(f"{source}: [audit].name: missing, and the file name {name!r} is not "
                        f"{SLUG_RULE}; set [audit].name")
    parts: dict[str, Any] = {
        "name": name, "seed": audit.seed,
        "data": from_table(DataSpec, move_deprecated_keys(doc.get("data", {}), source),
                           where=f"{source}: [data]", problems=problems), "model": build(ModelSpec, "model"),
        "train": build(TrainSpec, "train", base={"seed": audit.seed}),
        "executor": build(ExecutorSpec, "executor"),
        "predict": build(PredictSpec, "predict"),
        "dissection": build(DissectionSpec, "dissection") if "dissection" in doc else None,
    }
    data, model = parts["data"] or DataSpec(), parts["model"] or ModelSpec()
    parts["analysis"] = build(AnalysisOptions, "analysis", keys=ANALYSIS_KEYS,
                              base={"protected": data.protected,
                                    "num_classes": model.num_classes,
                                    # The user's own dense files are the artifacts that
                                    # ship; replicas compaudit trains study the method.
                                    "about": ("models" if model.weights or model.pretrained
                                              else "procedure")})
    shifts = doc.get("shifts", [])
    if not isinstance(shifts, list):
        problems.append(f"{source}: [[shifts]]: expected an array of tables")
        shifts = []
    parts["shifts"] = tuple(from_table(ShiftSpec, s, where=f"{source}: [[shifts]] #{i + 1}",
                                       problems=problems) for i, s in enumerate(shifts))
    parts["variants"] = _variants(doc.get("variants"), source, problems)
    try:
        parts["gate"] = policy_from_dict(doc["gate"], source=source) if "gate" in doc \
            else GatePolicy()
    except AuditInputError as err:
        problems += err.problems
    return parts


def parse_spec(text: str, *, source: str = "<spec>", base: str | Path | None = None
               ) -> AuditSpec:
    """Parse and validate spec TOML text; raise one error listing every mistake.

    Relative model files and manifests resolve against ``base`` (the spec's folder
    when read by :func:`load_spec`; the working directory when ``None``). Model files
    are checked from their headers here, before anything runs.
    """
    doc = parse_toml(text, source=source)
    problems = [f"{source}: unknown section [{key}]; valid sections: "
                f"{', '.join(sorted(SECTIONS))}" for key in doc if key not in SECTIONS]
    parts = _sections(doc, source, problems)
    if not problems:
        with_files(parts, Path(base) if base is not None else None)
        problems += _cross_checks(parts, source) + file_problems(parts, source)
    if problems:
        raise AuditInputError(problems)
    return AuditSpec(source=source, text=text, **parts)


def load_spec(path: str | Path) -> AuditSpec:
    """Read and validate an audit spec file."""
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"{path}: audit spec not found; expected a TOML file such as "
                              "audits/demo.toml")
    return parse_spec(read_utf8(path), source=str(path), base=path.absolute().parent)


def demo_spec(*, spurious: bool = True) -> AuditSpec:
    """The embedded default audit (``compaudit/demo.toml``); ``spurious=False`` is the
    control on data without the planted harm (``compaudit/demo-control.toml``, run
    folder ``reports/demo-control``)."""
    name = "demo.toml" if spurious else "demo-control.toml"
    text = resources.files("compaudit").joinpath(name).read_text(encoding="utf-8")
    return parse_spec(text, source=f"compaudit/{name}")
