"""The hardware limit: matrix-multiply throughput measured here, and FLOPs per sentence of a backbone.

A transformer's work is almost all matrix products: per token, two FLOPs per weight of every linear
layer (embedding look-ups are free), plus attention's two products (scores, then the weighted sum
of values) that grow with the sequence length. Training costs about three forward passes (the
backward pass computes gradients for both the activations and the weights). Dividing the machine's
measured matmul throughput by these FLOPs gives the sentences/s no implementation can beat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

TRAIN_FORWARD_MULTIPLE = 3.0  # forward + backward (activation and weight gradients)


def matmul_gflops(dtype_name: str, m: int = 2048, k: int = 384, n: int = 1536, seconds: float = 2.0) -> float:
    """Best sustained GFLOP/s of an [m, k] @ [k, n] product: the shape of MiniLM's feed-forward layer
    on a batch of 32 sentences of 64 tokens, so the figure is what the model's matmuls can get."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    for _ in range(5):  # warm-up: kernel selection, caches
        torch.mm(a, b, out=out)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b, out=out)
        best = max(best, 10 * 2 * m * k * n / (time.perf_counter() - t))
    return best / 1e9


@dataclass
class BackboneCost:
    linear_params: int  # weights of the linear layers that every token goes through
    layers: int
    hidden: int

    def forward_flops(self, tokens: float) -> float:
        """FLOPs of one forward pass over a sentence of ``tokens`` tokens."""
        dense = 2 * self.linear_params * tokens
        attention = self.layers * 4 * tokens * tokens * self.hidden  # QK^T and AV, 2 FLOPs per multiply-add
        return dense + attention

    def train_flops(self, tokens: float) -> float:
        return TRAIN_FORWARD_MULTIPLE * self.forward_flops(tokens)


def backbone_cost(model_dir: str) -> BackboneCost:
    """Count the per-token linear weights of a Hugging Face encoder (its unused pooler left out)."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    linear = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "pooler" not in name)
    return BackboneCost(linear, config.num_hidden_layers, config.hidden_size)


def mean_tokens(model_dir: str, texts: list[str], max_length: int) -> float:
    """Mean token count (special tokens included, truncated as in training) of ``texts``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return sum(len(i) for i in ids) / max(len(ids), 1)


def machine() -> dict[str, str]:
    import os
    import platform

    import torch

    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cores": str(os.cpu_count()), "torch": torch.__version__,
            "torch_threads": str(torch.get_num_threads()), "python": platform.python_version()}


def main() -> None:
    """Run in a child process by run_benchmark.py (so that torch stays out of the parent):
    ``hardware_limit.py MODEL_DIR TEXTS.txt MAX_LENGTH`` prints one JSON line."""
    import json
    import sys

    model_dir, texts_path, max_length = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(texts_path, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    cost = backbone_cost(model_dir)
    tokens = mean_tokens(model_dir, texts, max_length)
    print(json.dumps({"machine": machine(), "gflops": {p: matmul_gflops(p) for p in ("fp32", "bf16")},
                      "linear_params": cost.linear_params, "layers": cost.layers, "hidden": cost.hidden,
                      "mean_tokens": tokens}))


if __name__ == "__main__":
    main()
