"""Inference in bf16: the backbone's linear weights are cast once at load, with the same results."""

from __future__ import annotations

import numpy as np
import torch

from conftest import sample_rows


def test_bf16_inference_casts_backbone_weights_once_and_gives_autocasts_results(trained_run):
    from mtlcli.inference.loaded_run import load_run, predict_batches

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


def test_fp32_inference_keeps_fp32_weights(trained_run):
    from mtlcli.inference.loaded_run import load_run

    loaded = load_run(trained_run[0], "cpu", "fp32")
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
