"""Audit specs: TOML in ``audits/`` → validated, typed objects.

Every mistake in a spec is collected and reported at once, each naming the file, the
key and what was expected. The parser only builds dataclasses; the pipeline acts on them.
See ``audits/demo.toml`` for an annotated example of every section.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from compaudit.errors import AuditInputError
from compaudit.gate.policy import GatePolicy, policy_from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "AuditSpec",
    "DataSpec",
    "ModelSpec",
    "TrainSpec",
    "VariantSpec",
    "ShiftSpec",
    "AnalysisSpec",
    "ExecutorSpec",
    "DissectionSpec",
    "METHODS",
    "demo_spec",
    "load_spec",
    "parse_spec",
]

#: Method names usable in ``[[variants]]``, and the config dataclass each builds.
METHODS: dict[str, str] = {
    "gradual_magnitude": "compaudit.compress.magnitude:GradualMagnitudeConfig",
    "one_shot_magnitude": "compaudit.compress.magnitude:OneShotMagnitudeConfig",
    "random": "compaudit.compress.magnitude:RandomPruningConfig",
    "unit": "compaudit.compress.units:UnitPruningConfig",
    "lottery": "compaudit.compress.lottery:LotteryTicketConfig",
    "float16": "compaudit.compress.quantization:Float16Config",
    "bfloat16": "compaudit.compress.quantization:BFloat16Config",
    "int8_weight_only": "compaudit.compress.quantization:Int8WeightOnlyConfig",
    "int8_static": "compaudit.compress.quantization:Int8StaticConfig",
}


@dataclass(frozen=True)
class DataSpec:
    """Which dataset, where, and which attributes matter.

    ``dataset = "synthetic-faces"`` generates the embedded default into ``root``
    (relative paths resolve against the run folder); any registered dataset name reads
    existing files from ``root``.
    """

    dataset: str = "synthetic-faces"
    root: str = "data/synthetic-faces"
    target: str = "Blond_Hair"
    protected: tuple[str, ...] = ("Male", "Young")
    image_size: int = 32
    train_split: str = "train"
    eval_split: str = "test"
    train_root: str = ""  # a separate folder for the training split (e.g. ImageNet train)
    max_train: int = 0  # 0: all
    max_eval: int = 0
    # Synthetic faces only: size, train/valid/test fractions, planted shortcut.
    n: int = 20000
    splits: tuple[float, ...] = (0.6, 0.1, 0.3)
    spurious: float = 0.8
    label_noise: float = 0.02


@dataclass(frozen=True)
class ModelSpec:
    """The architecture, and optionally weights to load instead of training: one
    state-dict file per replica (``weights``), or one torchvision weights enum found in
    the local torch hub cache (``pretrained``; never downloaded)."""

    arch: str = "small_cnn"
    num_classes: int = 2
    small_input: bool = True
    replicas: int = 5
    weights: tuple[str, ...] = ()
    pretrained: str = ""  # a torchvision weights enum, e.g. "ResNet50_Weights.IMAGENET1K_V2"


@dataclass(frozen=True)
class TrainSpec:
    """The training budget of the dense population and of fine-tuning."""

    epochs: int = 6
    batch_size: int = 128
    lr: float = 0.05
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["step", "cosine", "constant"] = "cosine"
    label_smoothing: float = 0.0
    fine_tune_epochs: int = 3
    fine_tune_lr: float = 0.01
    device: str = "cpu"


@dataclass(frozen=True)
class VariantSpec:
    """One compressed variant: a name, a method and the method's parameters."""

    name: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def build_config(self) -> Any:
        """The method's config dataclass, built from ``params``."""
        module, cls = METHODS[self.method].split(":")
        return getattr(import_module(module), cls)(**self.params)


@dataclass(frozen=True)
class ShiftSpec:
    """A shift set: corruptions generated from the eval split, or a shifted dataset."""

    kind: Literal["corruptions", "dataset"] = "corruptions"
    corruptions: tuple[str, ...] = ("gaussian_noise", "defocus_blur", "contrast", "jpeg_compression")
    severities: tuple[int, ...] = (1, 3, 5)
    max_images: int = 0  # 0: the whole eval split
    dataset: str = ""
    root: str = ""


@dataclass(frozen=True)
class AnalysisSpec:
    bootstrap: int = 1000
    positive_label: int = 1
    alpha: float = 0.05
    level: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class DissectionSpec:
    """Network dissection of every replica of every variant (optional ``[dissection]``).

    ``concepts``: the synthetic faces' concept masks (default root: ``[data].root``) or
    a Broden folder (``root`` required). ``split``: ``train``/``valid``/``test``/``all``
    for the synthetic faces, a value of the ``split`` column of Broden's ``index.csv``
    (empty: all rows). ``layers``: module names; empty = the architecture's defaults
    (``compaudit.dissection.DEFAULT_LAYERS``). ``max_images``: a seeded subset (0: all).
    """

    concepts: Literal["synthetic-faces", "broden"] = "synthetic-faces"
    root: str = ""
    split: str = "test"
    layers: tuple[str, ...] = ()
    quantile: float = 0.005
    iou_threshold: float = 0.04
    max_images: int = 1000
    batch_size: int = 128


@dataclass(frozen=True)
class ExecutorSpec:
    kind: Literal["local", "ray", "serial"] = "local"
    workers: int = 2
    address: str = ""


@dataclass(frozen=True)
class AuditSpec:
    """A validated audit spec."""

    name: str
    seed: int
    source: str
    text: str
    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    variants: tuple[VariantSpec, ...]
    shifts: tuple[ShiftSpec, ...]
    analysis: AnalysisSpec
    gate: GatePolicy
    executor: ExecutorSpec
    dissection: DissectionSpec | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def section(self, name: str) -> dict[str, Any]:
        """A section as plain data, for cache keys."""
        return _plain(getattr(self, name))


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _expected(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is tuple:
        return f"a list of {get_args(hint)[0].__name__}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint))


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """Check ``value`` against a field's type hint; return (ok, converted value)."""
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint), value
    if origin is tuple:
        inner = get_args(hint)[0]
        if not isinstance(value, list):
            return False, value
        results = [_coerce(v, inner) for v in value]
        return all(ok for ok, _ in results), tuple(v for _, v in results)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    return True, value


def _section(cls: type, table: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(table, dict):
        problems.append(f"{where}: expected a table")
        return cls()
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in table.items():
        if key not in hints:
            problems.append(f"{where}.{key}: unknown key; valid keys: {', '.join(names)}")
            continue
        ok, converted = _coerce(value, hints[key])
        if not ok:
            problems.append(f"{where}.{key}: got {value!r}; expected {_expected(hints[key])}")
            continue
        kwargs[key] = converted
    return cls(**kwargs)


def _check_ranges(spec: dict[str, Any], where: str, problems: list[str]) -> None:
    data, model, train = spec["data"], spec["model"], spec["train"]
    checks = [
        (data.image_size >= 16, "[data].image_size", "at least 16"),
        (0 <= data.spurious <= 1, "[data].spurious", "a value in [0, 1]"),
        (0 <= data.label_noise < 0.5, "[data].label_noise", "a value in [0, 0.5)"),
        (data.n >= 100, "[data].n", "at least 100"),
        (len(data.splits) == 3 and abs(sum(data.splits) - 1) < 1e-6, "[data].splits",
         "three fractions (train, valid, test) summing to 1"),
        (model.replicas >= 1, "[model].replicas", "at least 1"),
        (model.num_classes >= 2, "[model].num_classes", "at least 2"),
        (not model.weights or len(model.weights) == model.replicas, "[model].weights",
         f"one file per replica ({model.replicas})"),
        (not model.pretrained or (model.replicas == 1 and not model.weights),
         "[model].pretrained", "replicas = 1 and no [model].weights (one pretrained model)"),
        (train.epochs >= 1, "[train].epochs", "at least 1"),
        (train.batch_size >= 1, "[train].batch_size", "at least 1"),
        (train.lr > 0, "[train].lr", "a positive number"),
        (0 <= train.label_smoothing < 1, "[train].label_smoothing", "a value in [0, 1)"),
        (spec["analysis"].bootstrap >= 0, "[analysis].bootstrap", "0 or more"),
        (0 < spec["analysis"].alpha < 1, "[analysis].alpha", "a value in (0, 1)"),
        (spec["executor"].workers >= 1, "[executor].workers", "at least 1"),
    ]
    dx = spec.get("dissection")
    if dx is not None:
        from compaudit.dissection.dissect import DEFAULT_LAYERS

        checks += [
            (0 < dx.quantile < 1, "[dissection].quantile", "a value in (0, 1)"),
            (0 <= dx.iou_threshold < 1, "[dissection].iou_threshold", "a value in [0, 1)"),
            (dx.max_images >= 0, "[dissection].max_images", "0 (all) or more"),
            (dx.batch_size >= 1, "[dissection].batch_size", "at least 1"),
            (dx.concepts != "broden" or bool(dx.root), "[dissection].root",
             "the Broden folder (index.csv, label.csv, images/) with concepts = 'broden'"),
            (dx.concepts != "synthetic-faces" or bool(dx.root)
             or data.dataset == "synthetic-faces", "[dissection].root",
             "a synthetic-faces folder with masks/ (the data is not synthetic-faces)"),
            (bool(dx.layers) or model.arch in DEFAULT_LAYERS, "[dissection].layers",
             f"module names of {model.arch!r} (no default layers for it)"),
        ]
    if any(sh.kind == "corruptions" for sh in spec["shifts"]):
        checks.append((data.image_size >= 32, "[data].image_size",
                       "at least 32 with corruption shifts (ImageNet-C corruptions need it)"))
    for ok, key, expected in checks:
        if not ok:
            problems.append(f"{where}: {key}: expected {expected}")


def _variants(items: Any, where: str, problems: list[str]) -> tuple[VariantSpec, ...]:
    if not isinstance(items, list) or not items:
        problems.append(f"{where}: [[variants]]: expected at least one compressed variant")
        return ()
    out, seen = [], set()
    for i, item in enumerate(items):
        at = f"{where}: [[variants]] #{i + 1}"
        if not isinstance(item, dict):
            problems.append(f"{at}: expected a table")
            continue
        name, method = item.get("name"), item.get("method")
        if not isinstance(name, str) or not name or name == "dense":
            problems.append(f"{at}.name: got {name!r}; expected a non-empty name other than "
                            "'dense'")
        elif name in seen:
            problems.append(f"{at}.name: {name!r} is used twice; expected unique names")
        seen.add(name)
        if method not in METHODS:
            problems.append(f"{at}.method: got {method!r}; expected one of "
                            f"{', '.join(METHODS)}")
            continue
        params = {k: v for k, v in item.items() if k not in ("name", "method")}
        variant = VariantSpec(name=str(name), method=method, params=params)
        try:
            variant.build_config()
        except ImportError as err:  # pragma: no cover - optional methods
            problems.append(f"{at}.method: {method!r} is unavailable here ({err})")
        except (TypeError, ValueError) as err:
            problems.append(f"{at}: parameters of {method!r} are invalid: {err}")
        out.append(variant)
    return tuple(out)


def parse_spec(text: str, *, source: str = "<spec>") -> AuditSpec:
    """Parse and validate spec TOML text; raise one error listing every mistake."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise AuditInputError(f"{source}: not valid TOML ({err})") from err
    problems: list[str] = []
    sections = {"audit", "data", "model", "train", "variants", "shifts", "analysis", "gate",
                "executor", "dissection"}
    for key in doc:
        if key not in sections:
            problems.append(f"{source}: unknown section [{key}]; valid sections: "
                            f"{', '.join(sorted(sections))}")
    audit = doc.get("audit", {})
    name = audit.get("name", Path(source).stem) if isinstance(audit, dict) else "audit"
    seed = audit.get("seed", 0) if isinstance(audit, dict) else 0
    if not isinstance(name, str) or not name:
        problems.append(f"{source}: [audit].name: expected a non-empty string")
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"{source}: [audit].seed: got {seed!r}; expected an integer")
        seed = 0
    parts = {
        "data": _section(DataSpec, doc.get("data", {}), f"{source}: [data]", problems),
        "model": _section(ModelSpec, doc.get("model", {}), f"{source}: [model]", problems),
        "train": _section(TrainSpec, doc.get("train", {}), f"{source}: [train]", problems),
        "analysis": _section(AnalysisSpec, doc.get("analysis", {}), f"{source}: [analysis]",
                             problems),
        "executor": _section(ExecutorSpec, doc.get("executor", {}), f"{source}: [executor]",
                             problems),
    }
    parts["dissection"] = (_section(DissectionSpec, doc["dissection"],
                                    f"{source}: [dissection]", problems)
                           if "dissection" in doc else None)
    shifts = doc.get("shifts", [])
    if not isinstance(shifts, list):
        problems.append(f"{source}: [[shifts]]: expected an array of tables")
        shifts = []
    parts["shifts"] = tuple(_section(ShiftSpec, s, f"{source}: [[shifts]] #{i + 1}", problems)
                            for i, s in enumerate(shifts))
    parts["variants"] = _variants(doc.get("variants"), source, problems)
    try:
        parts["gate"] = policy_from_dict(doc["gate"], source=source) if "gate" in doc \
            else GatePolicy()
    except AuditInputError as err:
        problems += err.problems
        parts["gate"] = GatePolicy()
    if not problems:
        _check_ranges(parts, source, problems)
    if problems:
        raise AuditInputError(problems)
    return AuditSpec(name=name, seed=seed, source=source, text=text, **parts)


def load_spec(path: str | Path) -> AuditSpec:
    """Read and validate an audit spec file."""
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"{path}: audit spec not found; expected a TOML file such as "
                              "audits/demo.toml")
    return parse_spec(path.read_text(encoding="utf-8"), source=str(path))


def demo_spec(*, spurious: bool = True) -> AuditSpec:
    """The embedded default audit (``compaudit/demo.toml``); ``spurious=False`` is the
    control on data without the planted shortcut (run folder ``reports/demo-control``)."""
    from importlib import resources

    text = resources.files("compaudit").joinpath("demo.toml").read_text(encoding="utf-8")
    if not spurious:
        text = text.replace('name = "demo"', 'name = "demo-control"', 1)
        text = text.replace("spurious = 0.8 ", "spurious = 0.0 ", 1)
    spec = parse_spec(text, source="compaudit/demo.toml")
    if not spurious and spec.data.spurious != 0.0:  # pragma: no cover - guards the edit
        raise RuntimeError("demo.toml changed: cannot set [data].spurious for the control")
    return spec
