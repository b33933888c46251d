"""Does torch.compile speed up mtl's training step on this machine? A quick experiment, not a default.

    python benchmarks/compile_experiment.py --data ../shared/data/sentiment_labelled_sentences.csv

Trains the bundled MiniLM with mtl's own pieces (tokenize once, length-aware batches, the default
precision, AdamW) for --warmup-batches and then --timed-batches, once eagerly and once with the model
under torch.compile (dynamic shapes, since every length-aware batch has its own length). Prints the
compile warm-up time and the steady-state training sentences/s of each, in the same process.
"""

from __future__ import annotations

import argparse
import json
import time


def measure(compiled: bool, data, tasks, args) -> dict:
    import torch

    from mtlcli.data.batching import collate, train_batches
    from mtlcli.model.losses import task_losses
    from mtlcli.config import TrainConfig
    from mtlcli.model.builder import build
    from mtlcli.runtime.hardware import autocast, resolve_device, resolve_precision
    from mtlcli.model.network import default_model_path, load_pretrained_backbone

    torch.manual_seed(0)
    device = resolve_device("cpu")
    precision = resolve_precision(args.precision, device)
    model, _ = build(load_pretrained_backbone(default_model_path()), tasks, TrainConfig(pooling="mean", head="linear"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    step_model = torch.compile(model, dynamic=True) if compiled else model
    batches = train_batches(data.lengths, 32, 0, 1)
    needed = args.warmup_batches + args.timed_batches
    batches = (batches * (needed // len(batches) + 1))[:needed]

    def step(index) -> int:
        batch = collate(data, index, 0, device)
        with autocast(device, precision):
            logits = step_model(batch.input_ids, batch.attention_mask)
        summed = task_losses(logits, batch.labels, tasks)
        loss = sum(s / len(batch) for s, _ in summed.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return len(batch)

    model.train()
    t0 = time.perf_counter()
    for index in batches[: args.warmup_batches]:
        step(index)
    warmup = time.perf_counter() - t0
    t1, seen = time.perf_counter(), 0
    for index in batches[args.warmup_batches:]:
        seen += step(index)
    timed = time.perf_counter() - t1
    return {"compiled": compiled, "precision": precision, "warmup_s": round(warmup, 1),
            "train_sents_per_s": round(seen / timed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--warmup-batches", type=int, default=30, help="untimed: compilation and recompilation")
    parser.add_argument("--timed-batches", type=int, default=40)
    parser.add_argument("--only", choices=["eager", "compiled"], help="run one of the two")
    args = parser.parse_args()

    from mtlcli.data import tables as data_mod
    from mtlcli.data.batching import encode
    from mtlcli.model.network import default_model_path, load_tokenizer
    from mtlcli.tasks import columns

    table = data_mod.read_table(args.data, "sentence", None)
    tasks = columns.fit_tasks(table, columns.choose_types(table, {}, "|"), {})
    data = encode(load_tokenizer(default_model_path()), table.texts, columns.encode_targets(table, tasks), 128)
    for compiled in (False, True):
        if args.only and args.only != ("compiled" if compiled else "eager"):
            continue
        print(json.dumps(measure(compiled, data, tasks, args)), flush=True)


if __name__ == "__main__":
    main()
