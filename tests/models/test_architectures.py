"""Architectures: output shapes, the small-input stem, parameter counts, registry errors,
timm models, the user's own factories (imported, in workers too) and their errors."""

from __future__ import annotations

import functools
import socket
import sys
import textwrap

import pytest
import torch
from torch import nn

from compaudit.errors import AuditInputError
from compaudit.models import architectures
from compaudit.models.architectures import (
    build_model,
    list_architectures,
    register_architecture,
)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_three_shared_architectures_are_registered():
    assert {"resnet18", "resnet50", "small_cnn"} <= set(list_architectures())
    assert list_architectures() == sorted(list_architectures())


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "small_cnn"])
@pytest.mark.parametrize("small_input", [False, True])
def test_logits_have_shape_batch_by_classes_at_32px(arch, small_input):
    model = build_model(arch, num_classes=7, small_input=small_input).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [16, 64])
def test_small_cnn_takes_16_to_64_px(size):
    with torch.no_grad():
        out = build_model("small_cnn", num_classes=2).eval()(torch.randn(3, 3, size, size))
    assert out.shape == (3, 2)


def test_small_cnn_parameter_count_by_hand():
    # 3x3 convs without bias 3-8-16-32-64, BatchNorm (weight + bias) per block, fc 64 -> 2.
    convs = 9 * (3 * 8 + 8 * 16 + 16 * 32 + 32 * 64)
    bns = 2 * (8 + 16 + 32 + 64)
    assert _count(build_model("small_cnn", num_classes=2)) == convs + bns + 64 * 2 + 2


@pytest.mark.parametrize("arch, published", [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_resnet_parameter_counts_match_the_published_imagenet_models(arch, published):
    assert _count(build_model(arch, num_classes=1000)) == published


def test_small_input_swaps_the_stem_and_keeps_32px_resolution_into_layer1():
    model = build_model("resnet18", num_classes=10, small_input=True)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    seen = {}

    def record(module, inputs, output):
        seen["shape"] = output.shape

    model.layer1.register_forward_hook(record)
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    assert seen["shape"][-2:] == (32, 32)
    # The 3x3 stem has 64*3*3*3 weights instead of 64*3*7*7.
    assert _count(model) == _count(build_model("resnet18", num_classes=10)) - 64 * 3 * (49 - 9)


def test_same_global_seed_builds_identical_models():
    torch.manual_seed(5)
    a = build_model("small_cnn", num_classes=2)
    torch.manual_seed(5)
    b = build_model("small_cnn", num_classes=2)
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    assert all(torch.equal(p, q) for p, q in pairs)


def test_unknown_architecture_lists_the_valid_names():
    valid = "resnet18, resnet50, small_cnn"
    with pytest.raises(AuditInputError, match=r"\[model\].arch: unknown architecture "
                                              f"'resnet19'.*{valid}.*any torchvision "
                                              "classification model.*'timm:NAME'.*"
                                              "'package.module:callable'"):
        build_model("resnet19", num_classes=2)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf"])
def test_any_torchvision_classification_model_is_built_with_num_classes(name):
    import torchvision

    from compaudit.models.architectures import architecture_exists

    assert architecture_exists(name) and name not in list_architectures()
    torch.manual_seed(0)
    mine = build_model(name, num_classes=3)
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, weights=None, num_classes=3)
    # The same architecture and initialisation as torchvision's own builder.
    assert [k for k, _ in mine.state_dict().items()] == list(reference.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(),
                                                 reference.state_dict().values()))
    with torch.no_grad():
        assert mine.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_a_spec_with_a_torchvision_architecture_passes_the_preflight():
    from compaudit.pipeline.train import check_architecture
    from compaudit.spec import parse_spec

    base = '[[variants]]\nname = "f"\nmethod = "float16"\n[model]\narch = "{}"\n'
    check_architecture(parse_spec(base.format("mobilenet_v3_small"), source="s.toml"))
    with pytest.raises(AuditInputError,
                       match=r"s.toml: \[model\].arch: unknown architecture 'mobilenet_v9'"):
        check_architecture(parse_spec(base.format("mobilenet_v9"), source="s.toml"))


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2"])
def test_num_classes_must_be_a_positive_integer(bad):
    with pytest.raises(AuditInputError, match="num_classes must be a positive integer"):
        build_model("small_cnn", num_classes=bad)


def test_register_architecture_adds_a_builder_and_refuses_duplicates():
    @register_architecture("test_tiny_linear")
    def _tiny(*, num_classes: int, small_input: bool) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    try:
        assert "test_tiny_linear" in list_architectures()
        model = build_model("test_tiny_linear", num_classes=4)
        assert model(torch.randn(2, 3, 4, 4)).shape == (2, 4)
        with pytest.raises(ValueError, match="registered twice"):
            register_architecture("test_tiny_linear")(_tiny)
    finally:
        architectures.ARCHITECTURES._entries.pop("test_tiny_linear", None)


# --- timm ---------------------------------------------------------------------------------

TIMM_NAME = "resnet10t"  # 4.9 M parameters at 1000 classes; builds in well under a second


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test (nothing may be downloaded)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_timm_model_is_built_with_num_classes_without_weights_or_network(no_network,
                                                                         monkeypatch):
    import timm

    calls = []
    create = timm.create_model

    def spy(name, **kwargs):
        calls.append((name, kwargs))
        return create(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    torch.manual_seed(0)
    mine = build_model(f"timm:{TIMM_NAME}", num_classes=5)
    assert calls == [(TIMM_NAME, {"pretrained": False, "num_classes": 5})]
    torch.manual_seed(0)
    reference = create(TIMM_NAME, pretrained=False, num_classes=5)
    # The same structure and initialisation as timm's own builder.
    assert list(mine.state_dict()) == list(reference.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(),
                                                 reference.state_dict().values()))
    with torch.no_grad():
        assert mine.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_timm_options_are_passed_to_create_model(no_network):
    model = build_model(f"timm:{TIMM_NAME}", num_classes=3, options={"drop_rate": 0.25})
    assert model.drop_rate == 0.25


def test_missing_timm_names_the_extra_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(AuditInputError) as info:
        build_model(f"timm:{TIMM_NAME}", num_classes=2)
    _one_problem(info.value, f"'timm:{TIMM_NAME}' needs the optional timm extra",
                 'pip install -e ".[timm]"')


def test_unknown_timm_name_lists_close_matches():
    with pytest.raises(AuditInputError) as info:
        build_model("timm:resnet10x", num_classes=2)
    _one_problem(info.value, "unknown timm model 'resnet10x'", "close matches:",
                 "timm:resnet10t")


# --- the user's own code ------------------------------------------------------------------

USER_MODULE = "mymodels"
USER_CODE = textwrap.dedent("""\
    from torch import nn

    def factory(num_classes, width=8):
        return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(width, num_classes))

    def broken(num_classes):
        raise RuntimeError("no weights for\\nthis width")

    def not_a_model(num_classes):
        return {"num_classes": num_classes}

    CONSTANT = 3
""")


@pytest.fixture
def user_folder(tmp_path):
    """A folder holding ``mymodels.py``; the module is forgotten afterwards."""
    (tmp_path / f"{USER_MODULE}.py").write_text(USER_CODE, encoding="utf-8")
    (tmp_path / "fails_on_import.py").write_text("raise ValueError('bad\\nconfig')\n",
                                                 encoding="utf-8")
    yield tmp_path
    for name in (USER_MODULE, "fails_on_import"):
        sys.modules.pop(name, None)


def _one_problem(err: AuditInputError, *parts: str) -> None:
    """One problem, on one line, naming the spec key and every part."""
    assert len(err.problems) == 1 and "\n" not in str(err), err.problems
    for part in ("[model]", *parts):
        assert part in str(err), (part, str(err))


def test_user_factory_is_imported_from_the_search_path_with_options(user_folder):
    before = list(sys.path)
    model = build_model(f"{USER_MODULE}:factory", num_classes=4, options={"width": 6},
                        search_path=user_folder)
    assert sys.path == before  # the folder was on sys.path for the import only
    assert model[0].out_channels == 6 and model[-1].out_features == 4
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    default = build_model(f"{USER_MODULE}:factory", num_classes=2, search_path=user_folder)
    assert default[0].out_channels == 8


def test_user_factory_is_found_on_sys_path_without_a_search_path(user_folder, monkeypatch):
    monkeypatch.syspath_prepend(str(user_folder))
    assert architectures.architecture_exists(f"{USER_MODULE}:factory")
    assert build_model(f"{USER_MODULE}:factory", num_classes=2)[-1].out_features == 2


@pytest.mark.parametrize("arch, parts", [
    ("no_such_module_xyz:factory", ["no module 'no_such_module_xyz' in sys.path and",
                                    "ModuleNotFoundError"]),
    ("fails_on_import:factory", ["importing module 'fails_on_import' failed",
                                 "ValueError: bad config"]),
    (f"{USER_MODULE}:nope", [f"module '{USER_MODULE}'", "has no attribute 'nope'"]),
    (f"{USER_MODULE}:CONSTANT", [f"{USER_MODULE}.CONSTANT is a int, not a callable"]),
    (f"{USER_MODULE}:broken", [f"{USER_MODULE}.broken(num_classes=2",
                               "raised RuntimeError: no weights for this width"]),
    (f"{USER_MODULE}:not_a_model", [f"{USER_MODULE}.not_a_model returned a dict",
                                    "expected a torch.nn.Module"]),
    ("my-models:factory", ["expected 'package.module:callable'"]),
])
def test_user_code_errors_are_one_line_naming_the_key_and_the_module(user_folder, arch,
                                                                     parts):
    before = list(sys.path)
    with pytest.raises(AuditInputError) as info:
        build_model(arch, num_classes=2, search_path=user_folder)
    _one_problem(info.value, repr(arch), *parts)
    assert sys.path == before  # restored on failure too


def test_unknown_options_of_a_user_factory_are_its_error(user_folder):
    with pytest.raises(AuditInputError) as info:
        build_model(f"{USER_MODULE}:factory", num_classes=2, options={"depth": 3},
                    search_path=user_folder)
    _one_problem(info.value, "raised TypeError", "depth")


@pytest.mark.parametrize("arch, options, match", [
    ("small_cnn", {"width": 3}, "the registered architecture 'small_cnn' takes none"),
    (f"timm:{TIMM_NAME}", {"pretrained": True}, "pretrained may not be set there"),
    ("mobilenet_v3_small", {"weights": "IMAGENET1K_V1"}, "weights may not be set there"),
    (f"{USER_MODULE}:factory", {"num_classes": 3}, "num_classes may not be set there"),
    (f"{USER_MODULE}:factory", [("width", 3)], "expected a table"),
])
def test_options_that_cannot_apply_are_refused(user_folder, arch, options, match):
    with pytest.raises(AuditInputError, match=r"\[model\].options: .*" + match):
        build_model(arch, num_classes=2, options=options, search_path=user_folder)


def test_torchvision_options_are_passed_to_its_builder():
    model = build_model("mobilenet_v3_small", num_classes=2, options={"dropout": 0.5})
    assert model.classifier[2].p == 0.5
    # GoogLeNet trains without its auxiliary heads (a plain tensor out in training mode).
    googlenet = build_model("googlenet", num_classes=2, options={"aux_logits": False,
                                                             "init_weights": False})
    assert torch.is_tensor(googlenet.train()(torch.randn(2, 3, 32, 32)))


@pytest.mark.parametrize("arch", ["resnet34", f"timm:{TIMM_NAME}"])
def test_options_a_library_builder_does_not_take_are_named(arch):
    with pytest.raises(AuditInputError) as info:
        build_model(arch, num_classes=2, options={"widht": 3})
    _one_problem(info.value, f"[model].options: {arch!r} does not accept widht", "TypeError")


def test_user_factory_builds_in_spawned_worker_processes(user_folder, tmp_path_factory):
    """Workers start with a fresh interpreter: the arch string, options and search path
    (carried by the jobs) are enough to build the model there, for training a replica
    and for rebuilding the dense replicas of a variant job."""
    from compaudit.executors import LocalExecutor
    from compaudit.models.population import train_population
    from compaudit.models.training import TrainConfig
    from compaudit.pipeline.jobs import dense_models

    arch, options = f"{USER_MODULE}:factory", {"width": 5}
    assert str(user_folder) not in sys.path and USER_MODULE not in sys.modules
    data = [(torch.randn(3, 8, 8), k % 2, f"x{k}") for k in range(4)]
    config = TrainConfig(epochs=1, batch_size=4, lr=0.01, seed=3)
    out = tmp_path_factory.mktemp("population")
    # A fresh pool each time: a worker that imported the module once would hide a
    # missing search path the next time.
    with LocalExecutor(max_workers=1, threads_per_worker=1, progress=False) as pool:
        paths = train_population(arch, data, config, replicas=1, executor=pool, out_dir=out,
                                 num_classes=2, options=options, search_path=str(user_folder))
    built = functools.partial(dense_models, arch, 2, False, options=options,
                              search_path=str(user_folder))
    with LocalExecutor(max_workers=1, threads_per_worker=1, progress=False) as pool:
        (models,) = pool.map(built, [paths])
    assert [p.name for p in paths] == ["replica-000.pt"]
    assert models[0][0].out_channels == 5 and not models[0].training
    # The parent only checked the name; the worker's trained weights load here too.
    here = dense_models(arch, 2, False, paths, options=options, search_path=str(user_folder))
    assert all(torch.equal(a, b) for a, b in zip(here[0].state_dict().values(),
                                                 models[0].state_dict().values()))


def test_a_spec_with_user_code_is_checked_against_its_own_folder(user_folder):
    from compaudit.pipeline.train import check_architecture, model_search_path
    from compaudit.spec import load_spec

    spec_text = ('[[variants]]\nname = "f"\nmethod = "float16"\n[model]\n'
                 'arch = "{arch}"\noptions = {{ width = 4 }}\n')
    good = user_folder / "audit.toml"
    good.write_text(spec_text.format(arch=f"{USER_MODULE}:factory"), encoding="utf-8")
    spec = load_spec(good)
    assert spec.model.options == {"width": 4}
    assert model_search_path(spec) == str(user_folder.resolve())
    check_architecture(spec)
    bad = user_folder / "bad.toml"
    bad.write_text(spec_text.format(arch=f"{USER_MODULE}:broken"), encoding="utf-8")
    with pytest.raises(AuditInputError) as info:
        check_architecture(load_spec(bad))
    _one_problem(info.value, f"{bad}: [model].arch: '{USER_MODULE}:broken'",
                 "raised TypeError")


def test_model_options_must_be_a_table_in_a_spec():
    from compaudit.spec import parse_spec

    text = '[[variants]]\nname = "f"\nmethod = "float16"\n[model]\noptions = 3\n'
    with pytest.raises(AuditInputError, match=r"s.toml: \[model\].options: got 3; "
                                              "expected a table"):
        parse_spec(text, source="s.toml")
    assert parse_spec(text.replace("options = 3\n", ""), source="s.toml").model.options == {}


def test_a_timm_spec_passes_the_preflight_and_a_typo_does_not():
    from compaudit.pipeline.train import check_architecture
    from compaudit.spec import parse_spec

    base = '[[variants]]\nname = "f"\nmethod = "float16"\n[model]\narch = "{}"\n'
    check_architecture(parse_spec(base.format(f"timm:{TIMM_NAME}"), source="s.toml"))
    with pytest.raises(AuditInputError, match=r"s.toml: \[model\].arch: unknown timm model"):
        check_architecture(parse_spec(base.format("timm:resnet10x"), source="s.toml"))


def test_check_architecture_leaves_the_global_rng_as_it_was():
    from compaudit.pipeline.train import check_architecture
    from compaudit.spec import parse_spec

    spec = parse_spec('[[variants]]\nname = "f"\nmethod = "float16"\n', source="s.toml")
    torch.manual_seed(1)
    check_architecture(spec)
    after = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(3))


def _timm_form():
    pytest.importorskip("timm", reason='timm:NAME needs the optional timm extra '
                                       '(pip install -e ".[timm]")')
    return f"timm:{TIMM_NAME}", None


@pytest.mark.parametrize("form", ["registered", "torchvision", "timm", "user"])
def test_train_population_accepts_every_form_that_build_model_accepts(form, tmp_path,
                                                                      user_folder):
    from dataclasses import replace

    from compaudit.models.population import train_population
    from compaudit.models.training import TrainConfig, train

    arch, options = {"registered": ("small_cnn", None),
                     "torchvision": ("mobilenet_v3_small", None),
                     "user": (f"{USER_MODULE}:factory", {"width": 6})}.get(form) or _timm_form()
    search = user_folder if form == "user" else None
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(3, 32, 32, generator=gen), k % 2, f"x{k}") for k in range(4)]
    config = TrainConfig(epochs=1, batch_size=2, lr=0.05, seed=0)
    (path,) = train_population(arch, data, config, replicas=1, seeds=[7], out_dir=tmp_path / "p",
                               num_classes=2, options=options, search_path=search)

    # torch's own loader, strict: the file holds exactly the architecture's tensors.
    saved = torch.load(path, weights_only=True)
    loaded = build_model(arch, num_classes=2, options=options, search_path=search)
    loaded.load_state_dict(saved, strict=True)
    # The reference: the same architecture trained directly, from the replica's seed.
    torch.manual_seed(7)
    fresh = build_model(arch, num_classes=2, options=options, search_path=search)
    initial = {k: v.clone() for k, v in fresh.state_dict().items()}
    train(fresh, data, replace(config, seed=7, num_threads=1), progress=False)
    x = torch.randn(3, 3, 32, 32, generator=gen)
    with torch.no_grad():
        out, expected = loaded.eval()(x), fresh.eval()(x)
    assert out.shape == (3, 2)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # Training moved the weights: the file is not the initialisation.
    assert any(not torch.equal(saved[k], v) for k, v in initial.items()
               if v.is_floating_point())
