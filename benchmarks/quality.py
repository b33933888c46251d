"""Is the default `mtl train` better than a bag of words? Per task, against TF-IDF + logistic regression.

    python benchmarks/quality.py --data ../shared/data/sentiment_labelled_sentences.csv \
        ../shared/data/womens_clothing_reviews.csv data/slurp.csv --out quality.json

For each data set: the validation split `mtl train` itself makes (default --val-split and --seed),
then per task a TF-IDF (word 1-2 grams, sublinear tf) + logistic regression baseline whose C is
chosen by 3-fold cross-validation on the training rows, and `mtl train DATA` with default settings
(plus --flags). Accuracy and macro-F1 on the same validation rows, and wall times. --mtl FILE takes
the mtl figures from a sweep.py results file (setting --setting) instead of training here.
--peer SEED_LOOP.py also times the plain loop (`../shared/bench/seed_loop.py`) for --peer-epochs
epochs on the same data (its first two label columns, renamed to the names it reads), whole
process, beside `mtl train`'s whole process. Needs scikit-learn (`pip install -e ".[bench]"`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep import train  # noqa: E402

from mtlcli.data.tables import MISSING, encode_labels, load_train_val  # noqa: E402


def baseline(data: Path) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import accuracy_score, f1_score

    t0 = time.perf_counter()
    train_t, val_t, label_sets = load_train_val(str(data), None, "sentence", [], 0.2, 42)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train, x_val = vectorizer.fit_transform(train_t.texts), vectorizer.transform(val_t.texts)
    y_train, y_val = encode_labels(train_t, label_sets), encode_labels(val_t, label_sets)
    tasks = {}
    for task in label_sets:
        fit_rows = [i for i, y in enumerate(y_train[task]) if y != MISSING]
        val_rows = [i for i, y in enumerate(y_val[task]) if y != MISSING]
        model = LogisticRegressionCV(Cs=[0.3, 1, 3, 10, 30], cv=3, max_iter=3000)
        model.fit(x_train[fit_rows], [y_train[task][i] for i in fit_rows])
        truth, pred = [y_val[task][i] for i in val_rows], model.predict(x_val[val_rows])
        tasks[task] = {"acc": round(accuracy_score(truth, pred), 4),
                       "f1": round(f1_score(truth, pred, average="macro"), 4)}
    return {"tasks": tasks, "wall_s": round(time.perf_counter() - t0, 1), "train_rows": len(train_t),
            "val_rows": len(val_t)}


def time_peer(script: Path, data: Path, epochs: int, work: Path) -> dict:
    """The plain loop's whole-process wall time on ``data``, for --peer-epochs epochs."""
    import csv

    from mtlcli.model.network import default_model_path

    with open(data, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    renamed = work / f"{data.stem}-peer.csv"
    with open(renamed, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["sentence", "class_label", "sentiment_label"], *(r[:3] for r in rows[1:])])
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), str(renamed), default_model_path(), str(epochs)],
                          capture_output=True, text=True)
    return {"wall_s": round(time.perf_counter() - t0, 1), "epochs": epochs, "returncode": done.returncode,
            "line": (done.stdout.strip().splitlines() or [""])[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", type=Path, required=True)
    parser.add_argument("--flags", default="", help="extra flags for mtl train")
    parser.add_argument("--mtl", type=Path, help="a sweep.py results file to take the mtl figures from")
    parser.add_argument("--setting", default="default", help="the setting of --mtl that is the default")
    parser.add_argument("--peer", type=Path, help="seed_loop.py, to time beside mtl train")
    parser.add_argument("--peer-epochs", type=int, default=3)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("quality.json"))
    args = parser.parse_args()
    swept = {}
    if args.mtl:
        for line in args.mtl.read_text().splitlines():
            r = json.loads(line)
            if r["setting"] == args.setting and "tasks" in r:
                swept[r["data"]] = r
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.data:
            base = {"tasks": {}} if args.skip_baseline else baseline(data)
            mtl = swept.get(data.name) or train(data, shlex.split(args.flags), Path(tmp), data.stem)
            results[data.name] = {"baseline": base, "mtl": mtl}
            if args.peer:
                results[data.name]["peer"] = time_peer(args.peer, data, args.peer_epochs, Path(tmp))
            print(json.dumps({data.name: results[data.name]}), file=sys.stderr, flush=True)
    args.out.write_text(json.dumps(results, indent=2))
    lines = ["| data set | task | TF-IDF + LR acc / macro-F1 | mtl default acc / macro-F1 | macro-F1 gain |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        for task, b in r["baseline"]["tasks"].items():
            m = r["mtl"].get("tasks", {}).get(task)
            mine = f"{m['acc']:.3f} / {m['f1']:.3f}" if m else "error"
            gain = f"{m['f1'] - b['f1']:+.3f}" if m else ""
            lines.append(f"| {name} | {task} | {b['acc']:.3f} / {b['f1']:.3f} | {mine} | {gain} |")
    for name, r in results.items():
        if "peer" in r:
            lines.append(f"\n{name}: mtl train (defaults) {r['mtl'].get('wall_s')} s whole process; the plain loop, "
                         f"{r['peer']['epochs']} epochs: {r['peer']['wall_s']} s")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
