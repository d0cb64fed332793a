import json
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import torchgp
from torchgp.io import ExactGPModel, ModelFileError, load, save
from torchgp.optim.fit import fit


def fitted_exact(batch=()):
    X = torch.rand(*batch, 25, 2, dtype=torch.float64)
    y = torch.sin(4 * X[..., 0]) + X[..., 1] ** 2
    model = ExactGPModel(X, y, kernel="rbf + periodic * rbf").double()
    fit(torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model), maxiter=30, progress=False)
    return model.eval()


def predictions(model, X):
    with torch.no_grad():
        out = model.likelihood(model(X)) if hasattr(model, "likelihood") else model(X)
        return out.mean, out.variance


@pytest.mark.parametrize("batch", [(), (3,)])
def test_exact_and_batch_round_trip(tmp_path, batch):
    model = fitted_exact(batch)
    Xs = torch.rand(*batch, 6, 2, dtype=torch.float64)
    path = tmp_path / "m.safetensors"
    save(model, path, metadata={"note": "hi"}, tensors={"scale": torch.tensor([2.0])})
    loaded, meta, extra = load(path, with_metadata=True)
    assert type(loaded) is ExactGPModel and not loaded.training
    assert meta == {"note": "hi"} and torch.equal(extra["scale"], torch.tensor([2.0]))
    for a, b in zip(predictions(model, Xs), predictions(loaded, Xs)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    again = pickle.loads(pickle.dumps(loaded))
    torch.testing.assert_close(predictions(again, Xs)[0], predictions(model, Xs)[0], rtol=0, atol=0)


class UserGP(torchgp.models.ExactGP):
    def __init__(self, x, y, likelihood):
        super().__init__(x, y, likelihood)
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.MaternKernel(nu=1.5))

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def test_user_model_loads_into_an_instance(tmp_path):
    X = torch.rand(20, 1, dtype=torch.float64)
    lik = torchgp.likelihoods.GaussianLikelihood()
    model = UserGP(X, X[:, 0].cos(), lik).double()
    fit(torchgp.mlls.ExactMarginalLogLikelihood(lik, model), maxiter=20, progress=False)
    model.eval()
    save(model, tmp_path / "u.st")
    with pytest.raises(ModelFileError, match="model=MyModel"):
        load(tmp_path / "u.st")
    fresh = UserGP(torch.zeros(3, 1), torch.zeros(3), torchgp.likelihoods.GaussianLikelihood())
    loaded = load(tmp_path / "u.st", model=fresh)
    assert torch.equal(loaded.train_inputs[0], X)
    Xs = torch.rand(4, 1, dtype=torch.float64)
    torch.testing.assert_close(predictions(loaded, Xs)[0], predictions(model, Xs)[0], rtol=0, atol=0)
    with pytest.raises(ModelFileError, match="do not fit"):
        load(tmp_path / "u.st", model=ExactGPModel(torch.zeros(3, 1), torch.zeros(3), kernel="rq"))


def test_variational_round_trip(tmp_path):
    from torchgp.io import _approximate_gp_model_class

    cls = _approximate_gp_model_class()  # an ImportError of torchgp's own variational code fails here
    assert isinstance(cls, type)
    X = torch.rand(60, 1, dtype=torch.float64)
    y = torch.sin(6 * X[:, 0])
    model = cls(X[:8].clone(), kernel="matern52").double()
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    fit(torchgp.mlls.VariationalELBO(lik, model, num_data=60), data=(X, y), maxiter=30, progress=False)
    model.eval()
    save(model, tmp_path / "v.st")
    loaded = load(tmp_path / "v.st")
    assert type(loaded) is cls
    Xs = torch.rand(5, 1, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(Xs).mean, model(Xs).mean, rtol=0, atol=0)
        torch.testing.assert_close(loaded(Xs).variance, model(Xs).variance, rtol=0, atol=0)


def test_modified_files_are_refused(tmp_path):
    path = tmp_path / "m.st"
    save(fitted_exact(), path)
    raw = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.st"
    raw[-5] ^= 0x01  # a bit of the last tensor's payload
    flipped.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="modified"):
        load(flipped)
    # metadata edited, file still a valid safetensors file
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    header = json.loads(meta["torchgp"])
    header["spec"]["kernel"]["type"] = "ProductKernel"
    edited = tmp_path / "edited.st"
    save_file(tensors, str(edited), metadata={**meta, "torchgp": json.dumps(header, sort_keys=True)})
    with pytest.raises(ModelFileError, match="modified"):
        load(edited)
    # a tensor replaced, digest kept
    tensors["state/likelihood.noise_covar.raw_noise"] = tensors["state/likelihood.noise_covar.raw_noise"] + 1
    swapped = tmp_path / "swapped.st"
    save_file(tensors, str(swapped), metadata=meta)
    with pytest.raises(ModelFileError, match="modified"):
        load(swapped)
    garbage = tmp_path / "garbage.st"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a readable"):
        load(garbage)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.st")


def test_priors_are_saved_and_restored(tmp_path):
    from torchgp.priors import GammaPrior, LogNormalPrior, NormalPrior

    X = torch.rand(20, 1, dtype=torch.float64)
    y = torch.sin(6 * X[:, 0])
    lik = torchgp.likelihoods.GaussianLikelihood(noise_prior=GammaPrior(1.1, 0.05))
    model = ExactGPModel(X, y, lik, kernel="rbf").double()
    model.covar_module.register_prior("outputscale_prior", LogNormalPrior(0.0, 1.0), "outputscale")
    model.covar_module.base_kernel.register_prior("lengthscale_prior", NormalPrior(0.3, 0.1), "lengthscale")
    fit(torchgp.mlls.ExactMarginalLogLikelihood(lik, model), maxiter=20, progress=False)
    save(model, tmp_path / "p.st")
    loaded = load(tmp_path / "p.st")
    names = {name: type(prior) for name, _, prior, _, _ in loaded.named_priors()}
    assert names == {
        "likelihood.noise_covar.noise_prior": GammaPrior,
        "covar_module.outputscale_prior": LogNormalPrior,
        "covar_module.base_kernel.lengthscale_prior": NormalPrior,
    }
    values = []
    for m in (model, loaded):
        m.train()
        with torch.no_grad():
            values.append(float(torchgp.mlls.ExactMarginalLogLikelihood(m.likelihood, m)(m(X), y)))
            assert float(m.log_prior()) != 0.0
    assert values[0] == values[1]
    loaded.covar_module.base_kernel.lengthscale = 0.5  # the prior follows the parameter it was registered on
    torch.testing.assert_close(
        loaded.covar_module.base_kernel.lengthscale_prior.log_prob(torch.tensor(0.5)),
        NormalPrior(0.3, 0.1).log_prob(torch.tensor(0.5)),
    )


def test_custom_priors_need_model(tmp_path):
    X = torch.rand(10, 1, dtype=torch.float64)
    model = ExactGPModel(X, X[:, 0], kernel="rbf").double()
    model.covar_module.register_prior(
        "custom_prior", torchgp.priors.NormalPrior(0.0, 1.0), lambda m: m.outputscale.log()
    )
    save(model, tmp_path / "c.st")
    with pytest.raises(ModelFileError, match="custom closure"):
        load(tmp_path / "c.st")
    fresh = ExactGPModel(X, X[:, 0], kernel="rbf").double()
    fresh.covar_module.register_prior(
        "custom_prior", torchgp.priors.NormalPrior(0.0, 1.0), lambda m: m.outputscale.log()
    )
    load(tmp_path / "c.st", model=fresh)


def test_missing_variational_code_raises_instead_of_falling_back(monkeypatch):
    import sys

    import torchgp.io as io_module

    monkeypatch.setattr(io_module, "_APPROX_CLASS", None)
    monkeypatch.setitem(sys.modules, "torchgp.variational", None)  # makes the import fail
    with pytest.raises(ImportError):
        io_module._approximate_gp_model_class()
