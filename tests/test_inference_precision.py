"""Inference in bf16: the backbone's linear weights are cast once at load (on a CPU, also laid out for
oneDNN's own linear operation), with autocast's results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import sample_rows
from mtlcli.runtime.packed_linear import PACKED_FROM, PackedLinear


def _lays_out() -> bool:
    """Whether this PyTorch and CPU run oneDNN's linear operation with a laid-out bf16 weight."""
    layer = PackedLinear(torch.nn.Linear(4, 4))
    with torch.inference_mode():
        layer(torch.zeros(PACKED_FROM, 4))
    return isinstance(layer.packed, torch.Tensor)


PACKS = _lays_out()


def test_bf16_inference_casts_backbone_weights_once_and_gives_autocasts_results(trained_run, monkeypatch):
    from mtlcli.inference import loaded_run
    from mtlcli.inference.loaded_run import load_run, predict_batches

    monkeypatch.setattr(loaded_run, "pack_linears", lambda module: 0)  # the cast path, as where oneDNN cannot pack
    run, _ = trained_run
    texts = [r[0] for r in sample_rows(40)]
    cast = load_run(run, "cpu", "bf16")
    linears = [m for m in cast.model.backbone.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert all(p.dtype == torch.float32 for p in cast.model.heads.parameters())  # heads and pooler untouched
    assert cast.model.backbone.get_input_embeddings().weight.dtype == torch.float32

    autocast_only = load_run(run, "cpu", "fp32")  # fp32 weights, then bf16 autocast around them
    autocast_only.precision = "bf16"
    a = predict_batches(cast, texts, batch_size=8, with_embeddings=True)
    b = predict_batches(autocast_only, texts, batch_size=8, with_embeddings=True)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.skipif(not PACKS, reason="this PyTorch has no oneDNN linear operation")
def test_bf16_inference_on_a_cpu_packs_the_backbones_linear_layers_and_gives_autocasts_results(trained_run):
    from mtlcli.inference.loaded_run import load_run, predict_batches

    run, _ = trained_run
    texts = [r[0] for r in sample_rows(300)]
    packed = load_run(run, "cpu", "bf16")
    layers = [m for m in packed.model.backbone.modules() if isinstance(m, PackedLinear)]
    assert layers and not any(isinstance(m, torch.nn.Linear) for m in packed.model.backbone.modules())
    assert all(p.dtype == torch.float32 for p in packed.model.heads.parameters())
    autocast_only = load_run(run, "cpu", "fp32")
    autocast_only.precision = "bf16"
    a = predict_batches(packed, texts, batch_size=64, with_embeddings=True)  # 64 texts x 8+ tokens: laid out
    assert sum(isinstance(m.packed, torch.Tensor) for m in layers) == len(layers) - 1  # all but the unused pooler
    b = predict_batches(autocast_only, texts, batch_size=64, with_embeddings=True)
    for key in a:  # the same products, rounded to bf16 once: at most a neighbouring bf16 value on the way
        np.testing.assert_allclose(a[key], b[key], rtol=0.02, atol=1e-3)


@pytest.mark.skipif(not PACKS, reason="this PyTorch has no oneDNN linear operation")
@pytest.mark.parametrize("rows", [1, 88, 256, 320, 768])  # x 2 texts
@pytest.mark.parametrize("sizes", [(384, 384), (384, 1536), (1536, 384)])  # MiniLM's layers
def test_a_packed_layer_gives_the_bf16_linear_layers_values(rows, sizes):
    torch.manual_seed(0)
    linear = torch.nn.Linear(*sizes)
    x = torch.randn(2, rows, sizes[0])
    layer = PackedLinear(linear)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = linear(x)
        got = layer(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    assert isinstance(layer.packed, torch.Tensor) == (2 * rows >= PACKED_FROM)  # small products keep F.linear
    if 2 * rows < PACKED_FROM:
        assert torch.equal(got, expected)
    else:  # oneDNN's own sums: the same value, or the neighbouring bf16 one
        step = torch.finfo(torch.bfloat16).eps * expected.float().abs()
        assert bool(((got.float() - expected.float()).abs() <= step).all())


@pytest.mark.parametrize("operation", ["_reorder_linear_weight", "_linear_pointwise"])
def test_a_layer_keeps_f_linear_where_onednn_cannot_run_it(monkeypatch, operation):
    def refused(*args):
        raise RuntimeError("no oneDNN bf16 kernel for this CPU")

    monkeypatch.setattr(torch.ops.mkldnn, operation, refused)
    linear = torch.nn.Linear(8, 4)
    layer = PackedLinear(linear)
    x = torch.randn(PACKED_FROM, 8)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = linear(x)
        assert torch.equal(layer(x), expected)
    assert layer.packed is False


def test_fp32_inference_keeps_fp32_weights(trained_run):
    from mtlcli.inference.loaded_run import load_run

    loaded = load_run(trained_run[0], "cpu", "fp32")
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
