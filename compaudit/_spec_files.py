"""A spec's input files: paths resolved against the spec's folder, and model files
checked from their headers at parse time (imports no torch)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from compaudit.errors import AuditInputError

__all__ = ["file_problems", "with_files"]


def _artifacts(variant: Any) -> str | None:
    """The config field of a variant's model files made elsewhere (``load``), if any."""
    from compaudit.compress.configs import METHODS

    return METHODS.get(variant.method).artifacts


def _resolve(path: str, base: Path) -> str:
    """A path from the spec: absolute as given, relative against ``base`` (absolute)."""
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)


def with_files(parts: dict[str, Any], base: Path | None) -> None:
    """The user's inputs resolved against the spec's folder (``None``: the working
    directory), made absolute so that no later step reads them against another folder:
    model files, dataset folders (not the generated synthetic faces, which live in the
    run folder), the manifest (when it is there; else the dataset reads it from its
    root), shift datasets and the dissection's concept folder."""
    # Absolute now: a spec given as "spec.toml" has the folder "." (which the run would
    # otherwise read against the run folder), and workers may start elsewhere.
    base = (base if base is not None else Path.cwd()).expanduser().absolute()
    model, data = parts["model"], parts["data"]
    parts["model"] = replace(model, weights=tuple(_resolve(w, base) for w in model.weights))
    if data.dataset != "synthetic-faces":
        data = replace(data, root=_resolve(data.root, base),
                       train_root=data.train_root and _resolve(data.train_root, base))
    if data.manifest and (base / data.manifest).is_file():
        data = replace(data, manifest=_resolve(data.manifest, base))
    parts["data"] = data
    parts["shifts"] = tuple(replace(s, root=_resolve(s.root, base)) if s.root else s
                            for s in parts["shifts"])
    parts["variants"] = tuple(
        replace(v, config=replace(v.config, **{field: tuple(
            _resolve(f, base) for f in getattr(v.config, field))}))
        if (field := _artifacts(v)) else v for v in parts["variants"])
    dx = parts["dissection"]
    generated = dx is not None and dx.concepts == data.dataset == "synthetic-faces"
    if dx is not None and dx.root and not generated:  # generated masks: the run folder
        parts["dissection"] = replace(dx, root=_resolve(dx.root, base))


def file_problems(parts: dict[str, Any], source: str) -> list[str]:
    """Model files: present and readable (headers only), paired with the replicas, and
    no method or dissection that needs torch weights of a dense ONNX/.pt2 model."""
    from compaudit.models.artifact_format import PT2_MESSAGE, artifact_format

    problems: list[str] = []

    def formats(paths: tuple[str, ...], key: str) -> set[str]:
        found: set[str] = set()
        for path in paths:
            try:
                fmt = artifact_format(path)
            except AuditInputError as err:
                problems.extend(f"{source}: {key}: {p}" for p in err.problems)
                continue
            if fmt == "pt2":
                problems.append(f"{source}: {key}: {PT2_MESSAGE.format(path=path)}")
            found.add(fmt)
        return found

    model = parts["model"]
    dense = formats(model.weights, "[model].weights")
    exported = sorted(dense - {"state_dict"})
    for i, v in enumerate(parts["variants"], 1):
        at = f"{source}: [[variants]] #{i}"
        field = _artifacts(v)
        if field:
            files = getattr(v.config, field)
            formats(files, f"[[variants]] #{i}.{field}")
            if not (model.weights or model.pretrained):
                problems.append(f"{at}.method: {v.method!r} pairs each file with a dense "
                                "replica given as a file; expected [model].weights (or "
                                "[model].pretrained) naming the dense model the artifacts "
                                "were compressed from")
            elif len(files) != model.replicas:
                problems.append(f"{at}.{field}: got {len(files)} file(s); expected one "
                                f"per dense replica ({model.replicas}), file k paired with "
                                "[model].weights[k]")
        elif exported:
            problems.append(f"{at}.method: got {v.method!r}, which needs the dense model's "
                            f"torch weights, but [model].weights are {', '.join(exported)} "
                            "files (no torch weights to compress); expected method = \"load\" "
                            "with the compressed artifacts, or a state-dict dense model")
    if exported and parts["dissection"] is not None:
        problems.append(f"{source}: [dissection]: needs the models' torch layers, but "
                        f"[model].weights are {', '.join(exported)} files; remove "
                        "[dissection] or give state-dict weights")
    return problems
