import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from solar.merge import linear, merge_models, slerp


def test_linear_is_the_weighted_average():
    a, b = torch.tensor([1.0, 2.0, -4.0]), torch.tensor([3.0, 6.0, 8.0])
    assert torch.equal(linear([a, b], [0.5, 0.5]), torch.tensor([2.0, 4.0, 2.0]))
    # Weights are normalised: 1:3 is 0.25/0.75.
    assert torch.allclose(linear([a, b], [1, 3]), 0.25 * a + 0.75 * b)


def test_slerp_endpoints_and_midpoint():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    assert torch.allclose(slerp(a, b, 0.0), a)
    assert torch.allclose(slerp(a, b, 1.0), b)
    # Halfway along a quarter circle: angle 45 degrees, norm between the two.
    mid = slerp(a, b, 0.5)
    s = math.sin(math.pi / 4) / math.sin(math.pi / 2)
    assert torch.allclose(mid, torch.tensor([s, 2 * s]))


def _write_model(path, tensors, layers=1):
    path.mkdir()
    save_file(tensors, path / "model.safetensors")
    (path / "config.json").write_text(
        f'{{"model_type": "mistral", "num_hidden_layers": {layers}, "hidden_size": 2, "vocab_size": 3}}'
    )


def test_merge_models_linear_exact(tmp_path):
    torch.manual_seed(0)
    a = {"w": torch.randn(3, 2), "b": torch.randn(2)}
    b = {"w": torch.randn(3, 2), "b": torch.randn(2)}
    _write_model(tmp_path / "a", a)
    _write_model(tmp_path / "b", b)
    out = tmp_path / "out"
    out.mkdir()
    merge_models([tmp_path / "a", tmp_path / "b"], out, "linear", [0.4, 0.6])
    merged = load_file(out / "model.safetensors")
    for k in a:
        assert torch.allclose(merged[k], 0.4 * a[k] + 0.6 * b[k], atol=1e-7)


def test_merge_models_refuses_mismatched_shapes(tmp_path):
    _write_model(tmp_path / "a", {"w": torch.zeros(3, 2)})
    _write_model(tmp_path / "b", {"w": torch.zeros(2, 3)})
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="tensor w has shapes"):
        merge_models([tmp_path / "a", tmp_path / "b"], tmp_path / "out")


def test_merge_models_refuses_nan(tmp_path):
    _write_model(tmp_path / "a", {"w": torch.tensor([float("nan"), 1.0])})
    _write_model(tmp_path / "b", {"w": torch.tensor([1.0, 1.0])})
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="non-finite"):
        merge_models([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
