"""The model-file package: parts described by their constructor arguments, old files, no import cycle."""

import ast
import pathlib

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.kernels import _factories
from torchgp.errors import InputError
from torchgp.io import ModelFileError, build_model, load, model_spec, save
from torchgp.io.specs import describe, rebuild
from torchgp.models.builders import ExactGPModel

# model files written by torchgp's first io module (format v1), each with the predictions it made (extra tensors)
DATA = pathlib.Path(__file__).parent / "data"
ROOT = pathlib.Path(torchgp.__file__).parent

# the kernels the first model files could hold: each must still be described and rebuilt
CORE = {"RBFKernel", "MaternKernel", "RQKernel", "PeriodicKernel", "CosineKernel", "LinearKernel"}
CORE |= {"PolynomialKernel", "SpectralMixtureKernel", "ScaleKernel", "AdditiveKernel", "ProductKernel"}


def _make(case, **kw):
    try:
        return case.make(**kw)
    except TypeError as err:  # the conformance suite reports a kernel its table cannot build yet
        pytest.skip(f"the kernel factory cannot build {case.name}: {err}")


@pytest.mark.parametrize("case", _factories.CASES, ids=_factories.CASE_IDS)
def test_every_kernel_is_rebuilt_or_refused_at_save(case, tmp_path):
    kernel = _make(case, batch_shape=torch.Size([2]))
    X = case.x(5, 2)
    try:
        spec = model_spec(kernel)
    except InputError as err:
        name = type(kernel).__name__
        assert not (name in CORE and getattr(torchgp.kernels, name) is type(kernel)), err  # same-named others refused
        assert "load(path, model=" in str(err)
        save(kernel, tmp_path / "k.st")  # still saved, loaded into an instance
        with pytest.raises(ModelFileError, match="cannot rebuild"):
            load(tmp_path / "k.st")
        return
    rebuilt = build_model(spec).double()
    rebuilt.load_state_dict(kernel.state_dict())
    with torch.no_grad():
        assert_close(rebuilt(X).to_dense(), kernel(X).to_dense(), loose=0)
    save(kernel, tmp_path / "k.st")
    again = load(tmp_path / "k.st")
    assert type(again) is type(kernel)
    with torch.no_grad():
        assert_close(again(X).to_dense(), kernel(X).to_dense(), loose=0)


def test_core_kernels_are_described():
    names = set()
    for case in _factories.CASES:
        try:
            names.add(model_spec(case.make())["kernel"]["type"])
        except (InputError, TypeError):  # refused, or not buildable by the factory (reported by its own suite)
            pass
    assert CORE <= names, CORE - names


def test_nested_parts_and_active_dims():
    k = torchgp.kernels.AdditiveKernel(
        torchgp.kernels.ScaleKernel(torchgp.kernels.MaternKernel(nu=0.5, active_dims=[1])),
        torchgp.kernels.RBFKernel(ard_num_dims=2),
    )
    k.active_dims = torch.tensor([0, 2])
    spec = describe(k)
    assert spec["type"] == "AdditiveKernel" and spec["active_dims"] == [0, 2]
    inner = spec["kernels"][0]["base_kernel"]
    assert inner["type"] == "MaternKernel" and inner["nu"] == 0.5 and inner["active_dims"] == [1]
    again = rebuild(spec)
    assert again.kernels[0].base_kernel.nu == 0.5 and again.kernels[1].ard_num_dims == 2
    assert torch.equal(again.active_dims, torch.tensor([0, 2]))


def test_arguments_that_do_not_rebuild_the_parameters_are_refused():
    k = torchgp.kernels.SpectralMixtureKernel(num_mixtures=3, ard_num_dims=2)
    k.num_mixtures = 1  # the attribute no longer holds the argument the parameters were made with
    with pytest.raises(InputError, match="other parameters"):
        describe(k)


def test_a_class_can_state_its_own_arguments():
    class Stated(torchgp.kernels.RBFKernel):
        def _spec(self):
            return {"ard_num_dims": 3}

    k = Stated(ard_num_dims=3)
    with pytest.raises(InputError, match="not one of the classes a model file rebuilds"):
        describe(k)  # a user's class is never rebuilt from a file, whatever it states


def test_unknown_names_in_a_file_are_refused():
    with pytest.raises(ModelFileError, match="unknown part"):
        rebuild({"type": "os.system"})
    with pytest.raises(ModelFileError, match="unknown argument"):
        rebuild({"type": "RBFKernel", "command": "rm"})
    with pytest.raises(ModelFileError, match="unknown model kind"):
        build_model({"kind": "pickle"})


@pytest.mark.parametrize("name", ["v1_exact", "v1_linear_mean_sm", "v1_variational"])
def test_files_of_the_first_format_still_load(name):
    model, _, extra = load(DATA / f"{name}.safetensors", with_metadata=True)
    with torch.no_grad():
        out = model.likelihood(model(extra["Xs"])) if name == "v1_exact" else model(extra["Xs"])
    assert_close(out.mean, extra["mean"])
    assert_close(out.variance, extra["var"])
    if name == "v1_exact":
        assert {n for n, *_ in model.named_priors()} == {"covar_module.kernels.0.outputscale_prior"}


def test_estimator_files_of_the_first_format_still_load():
    pytest.importorskip("sklearn")
    reg, _, extra = load(DATA / "v1_regressor.safetensors", with_metadata=True)
    mean, std = reg.predict(extra["Xs"].numpy(), return_std=True)
    assert_close(mean, extra["mean"])
    assert_close(std, extra["std"])
    clf, _, extra = load(DATA / "v1_classifier.safetensors", with_metadata=True)
    assert_close(clf.predict_proba(extra["Xs"].numpy()), extra["proba"])


def _imports(path: pathlib.Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_no_import_cycle_between_io_and_sklearn():
    io_files = sorted((ROOT / "io").glob("*.py"))
    assert io_files and not (ROOT / "io.py").exists()
    for path in io_files:  # io names the estimators' module in a whitelist and imports it only when a file needs it
        assert not any(m.startswith("torchgp.sklearn") for m in _imports(path, top_level_only=False)), path
    for path in sorted((ROOT / "sklearn").glob("*.py")):
        assert not any(m.startswith("torchgp.io") for m in _imports(path, top_level_only=False)), path
    for path in (ROOT / "models").glob("*.py"):  # the models layer never imports the tools layer
        assert not any(m.startswith(("torchgp.io", "torchgp.sklearn")) for m in _imports(path, False)), path


def test_builders_pickle_under_their_new_and_old_names():
    import pickle

    X = torch.rand(6, 1, dtype=torch.float64)
    model = ExactGPModel(X, X[:, 0], kernel="rbf").double()
    assert type(pickle.loads(pickle.dumps(model))) is ExactGPModel
    assert torchgp.io.ExactGPModel is ExactGPModel
    assert torchgp.io.ApproximateGPModel is torchgp.io._approximate_gp_model_class()
