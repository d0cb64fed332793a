"""The README's first code example runs as written (after `import torchgp as gpytorch`)."""

import pathlib
import re

import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_gp_example_runs_and_fits():
    text = README.read_text()
    section = text[text.index("## A GP in torchgp") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    torch.manual_seed(0)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    pred, lower, upper = namespace["pred"], namespace["lower"], namespace["upper"]
    assert pred.mean.shape == (50,)
    assert torch.all(lower < pred.mean) and torch.all(pred.mean < upper)
    inside = torch.linspace(-5, 5, 50).abs() <= 2
    rmse = (pred.mean[inside] - torch.sin(torch.linspace(-5, 5, 50)[inside])).pow(2).mean().sqrt()
    assert rmse < 0.2
