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

Task types: with --test, one training file (--data), optional validation rows (--val, else the split
`mtl train` makes) and a test file, tasks of any built-in type (--task-type TASK=TYPE, as mtl train
takes it; --task to choose columns). Every figure is on the test rows, with the metrics of
mtlcli.tasks.metrics (the ones `mtl eval` reports), per task:

    python benchmarks/quality.py --data ../shared/data/goemotions_train.csv \
        --val ../shared/data/goemotions_dev.csv --test ../shared/data/goemotions_test.csv \
        --text-column text --run runs/goemotions --out goemotions.json

- constant: classification always the training rows' most common label; multi-label each label's
  training frequency as its score, thresholded as the models are (tuned on the validation rows per
  label, 0.5 where it has fewer than 5 positives there: in effect every label predicted on every
  row, or none); regression always the training mean.
- tfidf: TF-IDF (word 1-2 grams, sublinear tf) fitted on the training texts; classification
  logistic regression, C by 3-fold cross-validation on the training rows; multi-label one-vs-rest
  logistic regression, C of (1, 4, 16) chosen by macro-F1 on the validation rows, scored at 0.5 and
  at per-label thresholds tuned on the validation rows as `mtl train` tunes its own (tfidf_tuned);
  regression ridge, alpha of (0.3, 1, 3, 10) chosen by RMSE on the validation rows.
- mtl: `mtl eval RUN TEST --json` of --run, or of a run `mtl train` makes here with default settings
  (plus --task-type, --task, --val, --text-column and --flags). --skip-mtl leaves it out, and
  --baseline FILE takes the baselines from such an earlier result instead of fitting them again.
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

import numpy as np  # noqa: E402

from mtlcli.data.tables import MISSING, read_table  # noqa: E402
from mtlcli.tasks import metrics  # noqa: E402
from mtlcli.tasks.columns import encode_targets, kind, load_train_val  # noqa: E402
from mtlcli.tasks.multilabel import DEFAULT_THRESHOLD, MIN_POSITIVES  # noqa: E402


def baseline(data: Path) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import accuracy_score, f1_score

    t0 = time.perf_counter()
    train_t, val_t, label_sets, _ = load_train_val(str(data), None, "sentence", [], 0.2, 42)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train, x_val = vectorizer.fit_transform(train_t.texts), vectorizer.transform(val_t.texts)
    y_train, y_val = encode_targets(train_t, label_sets), encode_targets(val_t, label_sets)
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


def labelled_rows(task, y: np.ndarray) -> np.ndarray:
    return np.flatnonzero(kind(task).labelled(y))


def class_figures(task, truth: np.ndarray, predicted: np.ndarray) -> dict:
    cm = metrics.confusion(truth, predicted, len(task.labels))
    return {"accuracy": metrics.accuracy(cm), "macro_f1": metrics.macro_f1(cm)}


def classification_baselines(task, x, y) -> dict:
    from sklearn.linear_model import LogisticRegressionCV

    fit, test = labelled_rows(task, y["train"]), labelled_rows(task, y["test"])
    truth = y["test"][test]
    common = int(np.bincount(y["train"][fit], minlength=len(task.labels)).argmax())
    model = LogisticRegressionCV(Cs=[0.3, 1, 3, 10, 30], cv=3, max_iter=3000)
    model.fit(x["train"][fit], y["train"][fit])
    return {"constant": {"answer": task.labels[common], **class_figures(task, truth, np.full_like(truth, common))},
            "tfidf": {"C": float(model.C_[0]), **class_figures(task, truth, model.predict(x["test"][test]))}}


def multilabel_baselines(task, x, y) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    rows = {split: labelled_rows(task, y[split]) for split in ("train", "val", "test")}
    truth, val = y["test"][rows["test"]], y["val"][rows["val"]]
    frequency = y["train"][rows["train"]].mean(0)

    def thresholded(val_scores: np.ndarray, test_scores: np.ndarray) -> dict:
        tuned = metrics.best_thresholds(val, val_scores, MIN_POSITIVES, DEFAULT_THRESHOLD)
        return metrics.multilabel_scores(truth, test_scores >= tuned)

    best = None
    for c in (1, 4, 16):
        model = OneVsRestClassifier(LogisticRegression(C=c, solver="liblinear", max_iter=1000))
        model.fit(x["train"][rows["train"]], y["train"][rows["train"]])
        val_scores = model.predict_proba(x["val"][rows["val"]])
        tuned = metrics.best_thresholds(val, val_scores, MIN_POSITIVES, DEFAULT_THRESHOLD)
        f1 = metrics.multilabel_scores(val, val_scores >= tuned)["macro_f1"]
        if best is None or f1 > best[0]:
            best = (f1, c, val_scores, model.predict_proba(x["test"][rows["test"]]))
    _, c, val_scores, test_scores = best
    constant = np.broadcast_to(frequency, truth.shape)
    return {"constant": {"answer": "each label's training frequency, thresholds tuned on validation",
                         **thresholded(np.broadcast_to(frequency, val.shape), constant)},
            "tfidf": {"C": c, "thresholds": "0.5", **metrics.multilabel_scores(truth, test_scores >= 0.5)},
            "tfidf_tuned": {"C": c, "thresholds": "tuned on validation", **thresholded(val_scores, test_scores)}}


def regression_baselines(task, x, y) -> dict:
    from sklearn.linear_model import Ridge

    rows = {split: labelled_rows(task, y[split]) for split in ("train", "val", "test")}
    values = {split: kind(task).values(task, y[split][r]) for split, r in rows.items()}
    best = None
    for alpha in (0.3, 1, 3, 10):
        model = Ridge(alpha=alpha).fit(x["train"][rows["train"]], values["train"])
        rmse = metrics.regression_scores(values["val"], model.predict(x["val"][rows["val"]]))["rmse"]
        if best is None or rmse < best[0]:
            best = (rmse, alpha, model)
    _, alpha, model = best
    mean = float(values["train"].mean())
    return {"constant": {"answer": f"the training mean {mean:.4f}",
                         **metrics.regression_scores(values["test"], np.full_like(values["test"], mean))},
            "tfidf": {"alpha": alpha,
                      **metrics.regression_scores(values["test"], model.predict(x["test"][rows["test"]]))}}


BASELINES = {"classification": classification_baselines, "multilabel": multilabel_baselines,
             "regression": regression_baselines}


def typed_baselines(data: Path, val: Path | None, test: Path, text_column: str, columns: list[str],
                    types: dict[str, str]) -> dict:
    """Per task of any built-in type, the constant and TF-IDF baselines' figures on the test rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    t0 = time.perf_counter()
    train_t, val_t, tasks, why = load_train_val(str(data), str(val) if val else None, text_column, columns, 0.2, 42,
                                                chosen=types)
    test_t = read_table(str(test), text_column, list(tasks))
    tables = {"train": train_t, "val": val_t, "test": test_t}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    vectorizer.fit(train_t.texts)
    x = {split: vectorizer.transform(t.texts) for split, t in tables.items()}
    y = {split: encode_targets(t, tasks, ignore_unknown=True) for split, t in tables.items()}
    out = {}
    for name, task in tasks.items():
        per_split = {split: y[split][name] for split in tables}
        out[name] = {"type": task.type, "why": why[name], **BASELINES[task.type](task, x, per_split)}
        print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)
    return {"tasks": out, "wall_s": round(time.perf_counter() - t0, 1), "train_rows": len(train_t),
            "val_rows": len(val_t), "test_rows": len(test_t)}


def mtl_eval(run: Path, test: Path) -> dict:
    """`mtl eval RUN TEST --json`, and the training figures of the run's summary."""
    done = subprocess.run([sys.executable, "-m", "mtlcli", "eval", str(run), str(test), "--json"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-3:]}
    report = json.loads(done.stdout)
    keep = ("type", "n", "loss", "accuracy", "macro_f1", "micro_f1", "samples_f1", "subset_accuracy",
            "rmse", "mae", "spearman", "r2")
    summary = json.loads((run / "summary.json").read_text())
    return {"run": str(run), "epochs_run": summary.get("epochs_run"), "best_epoch": summary.get("best_epoch"),
            "max_length": summary.get("max_length"), "warnings": summary.get("warnings", []),
            "train_sentences_per_s": summary.get("best_metrics", {}).get("train_sentences_per_s"),
            "tasks": {t: {k: v for k, v in r.items() if k in keep} for t, r in report["tasks"].items()}}


def typed_mtl(args: argparse.Namespace, work: Path) -> dict:
    if args.run:
        return mtl_eval(args.run, args.test)
    flags = ["--text-column", args.text_column, *(f for t in args.task for f in ("--task", t)),
             *(f for t in args.task_type for f in ("--task-type", t)), *shlex.split(args.flags)]
    if args.val:
        flags += ["--val", str(args.val)]
    trained = train(args.data[0], flags, work, args.data[0].stem)
    if "error" in trained:
        return trained
    return {"wall_s": trained["wall_s"], **mtl_eval(work / args.data[0].stem, args.test)}


SHOWN = {"classification": ("accuracy", "macro_f1"),
         "multilabel": ("macro_f1", "micro_f1", "samples_f1", "subset_accuracy"),
         "regression": ("rmse", "mae", "spearman", "r2")}


def typed_table(result: dict) -> str:
    lines = ["| task | type | metric | constant | TF-IDF | TF-IDF, tuned thresholds | mtl |",
             "|---|---|---|---|---|---|---|"]
    mine = result["mtl"].get("tasks", {})
    for task, b in result["baseline"]["tasks"].items():
        for metric in SHOWN[b["type"]]:
            cells = [b.get(k, {}).get(metric) for k in ("constant", "tfidf", "tfidf_tuned")]
            cells.append(mine.get(task, {}).get(metric))
            shown = ["" if v is None else f"{v:.3f}" for v in cells]
            lines.append(f"| {task} | {b['type']} | {metric} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def typed_main(args: argparse.Namespace) -> None:
    types = dict(t.split("=", 1) for t in args.task_type)
    if args.baseline:
        base = json.loads(args.baseline.read_text())["baseline"]
    else:
        base = typed_baselines(args.data[0], args.val, args.test, args.text_column, args.task, types)
    with tempfile.TemporaryDirectory() as tmp:
        mine = {} if args.skip_mtl else typed_mtl(args, Path(tmp))
    result = {"data": args.data[0].name, "val": args.val.name if args.val else None, "test": args.test.name,
              "baseline": base, "mtl": mine}
    args.out.write_text(json.dumps(finite(result), indent=2))
    print(typed_table(result))


def finite(value):
    """NaN (a constant answer's Spearman) as null: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return None if isinstance(value, float) and value != value else value


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
    parser.add_argument("--test", type=Path, help="task types: score every task on this file (one --data)")
    parser.add_argument("--val", type=Path, help="task types: validation rows (default: the split mtl train makes)")
    parser.add_argument("--text-column", default="text", help="task types: the text column")
    parser.add_argument("--task", action="append", default=[], help="task types: a task column (repeatable)")
    parser.add_argument("--task-type", action="append", default=[], help="task types: TASK=TYPE (repeatable)")
    parser.add_argument("--run", type=Path, help="task types: evaluate this run instead of training one")
    parser.add_argument("--skip-mtl", action="store_true", help="task types: the baselines only")
    parser.add_argument("--baseline", type=Path, help="task types: take the baselines from this earlier --out "
                        "(of the same files) instead of fitting them again")
    args = parser.parse_args()
    if args.test:
        typed_main(args)
        return
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
