"""What int8 prediction costs in accuracy: each run scored on its test file in fp32 and in int8 (and
any other precision asked for), with the difference per metric, and how often the two agree.

    OMP_NUM_THREADS=1 python benchmarks/int8_accuracy.py runs/sentiment=test.csv runs/goe=goe_test.csv \
        --precisions fp32,int8 --out int8-accuracy.json

Scores are `mtl eval`'s (the same routine). Agreement compares each row's decisions against the
first precision's: the predicted class (classification), the set of labels over their thresholds
(multi-label: the whole row, and each label), and for regression the mean and largest absolute
difference of the value, in the column's units. Prints a markdown table; --out keeps every figure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def scored(run: str, test: str, precision: str) -> tuple[dict, dict[str, np.ndarray], float, object]:
    """`mtl eval`'s report of ``run`` on ``test`` in ``precision``, each task's outputs per row, the seconds
    scoring took, and the loaded run."""
    from mtlcli.data import tables
    from mtlcli.data.batching import encode
    from mtlcli.inference.loaded_run import load_run
    from mtlcli.scoring.scores import score_encoded
    from mtlcli.tasks import columns

    loaded = load_run(run, "cpu", precision)
    present = [t for t in loaded.tasks if t in tables.read_header(test, None)]
    table = tables.read_table(test, loaded.text_column, present, None)
    encoded = encode(loaded.tokenizer, table.texts, columns.encode_targets(table, loaded.tasks), loaded.max_length)
    t0 = time.perf_counter()
    report, result = score_encoded(loaded, encoded)
    seconds = time.perf_counter() - t0
    return report, {t: r["outputs"] for t, r in result["tasks"].items()}, seconds, loaded


def agreement(task, kind_name: str, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    from mtlcli.tasks.columns import kind

    if kind_name == "classification":
        return {"labels_equal": float((a.argmax(1) == b.argmax(1)).mean()), "max_prob_diff": float(np.abs(a - b).max())}
    if kind_name == "multilabel":
        pa, pb = kind(task).predicted(task, a), kind(task).predicted(task, b)
        return {"rows_equal": float((pa == pb).all(1).mean()), "label_decisions_equal": float((pa == pb).mean()),
                "max_prob_diff": float(np.abs(a - b).max())}
    diff = np.abs(a.astype(np.float64) - b)
    return {"mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max())}


MAIN = {"classification": ("accuracy", "macro_f1"), "multilabel": ("macro_f1", "micro_f1", "subset_accuracy"),
        "regression": ("rmse", "mae", "spearman")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", nargs="+", metavar="RUN=TEST", help="a run folder and its test file")
    parser.add_argument("--precisions", default="fp32,int8", help="compared with the first, in order")
    parser.add_argument("--out", type=Path, help="write every figure here (JSON)")
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    results, lines = [], ["| data | task | metric | " + " | ".join(precisions) + " | " +
                          " | ".join(f"{p} - {precisions[0]}" for p in precisions[1:]) + " | agreement |",
                          "|---" * (4 + 2 * (len(precisions) - 1)) + "|"]
    for pair in args.pairs:
        run, _, test = pair.partition("=")
        by = {p: scored(run, test, p) for p in precisions}
        base_report, base_out, _, loaded = by[precisions[0]]
        entry = {"run": run, "test": test, "rows": base_report["n"],
                 "seconds": {p: by[p][2] for p in precisions}, "tasks": {}}
        for name, r in base_report["tasks"].items():
            kind_name = r["type"]
            task_entry = {"type": kind_name, "metrics": {}, "agreement": {}}
            for metric in MAIN.get(kind_name, ()):
                task_entry["metrics"][metric] = {p: by[p][0]["tasks"][name].get(metric) for p in precisions}
            for p in precisions[1:]:
                task_entry["agreement"][p] = agreement(loaded.tasks[name], kind_name, base_out[name], by[p][1][name])
            entry["tasks"][name] = task_entry
            agree = "; ".join(f"{p}: " + ", ".join(f"{k} {v:.4f}" for k, v in task_entry["agreement"][p].items())
                              for p in precisions[1:])
            for i, (metric, values) in enumerate(task_entry["metrics"].items()):
                shown = [f"{values[p]:.4f}" for p in precisions]
                diffs = [f"{values[p] - values[precisions[0]]:+.4f}" for p in precisions[1:]]
                lines.append(f"| {Path(test).name if i == 0 else ''} | {name if i == 0 else ''} | {metric} | "
                             f"{' | '.join(shown)} | {' | '.join(diffs)} | {agree if i == 0 else ''} |")
        results.append(entry)
        print(f"{run}: done", flush=True)
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps({"precisions": precisions, "results": results, "table": lines}, indent=1) + "\n")


if __name__ == "__main__":
    main()
