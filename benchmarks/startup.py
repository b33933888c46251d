"""Start-up, whole process: what a user waits for when one text is labelled or training begins.

    python benchmarks/startup.py --out benchmarks/results/startup.json

Measures, as child processes taking turns (one of each per round, so a change in the machine's load
touches all alike), the median wall seconds of ``--repeats`` rounds (default 5) of:

- ``python -c "import torch"``, the yardstick every other figure is divided by;
- ``mtl --help``;
- ``mtl predict RUN "text"`` on a run folder (PyTorch) and ``mtl predict EXPORT "text"`` on its ONNX
  export, each to the end of the process;
- ``mtl train DATA --epochs 1 --max-steps 1`` to the end of its first optimizer step (the process
  ends there: benchmarks/token_cache.py), with a warm token cache (one untimed run fills it first).

Without ``--run`` it trains one first (``mtl train DATA --epochs 1``, the bundled model) and exports
it to ONNX; ``--compare-with DIR`` measures the same commands with the mtl of another checkout too
(e.g. an older commit's ``git worktree``), side by side in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from children import run_child, write_result  # noqa: E402
from hardware_limit import machine  # noqa: E402
from token_cache import STEP_MARK  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEXT = "The battery died after a day."


def programs(run: Path, export: Path, data: str, runs: Path) -> dict[str, list[str]]:
    """Name -> the argv of each measured program (``mtl`` as ``python -m mtlcli``, as installed it is the same)."""
    mtl = [sys.executable, "-m", "mtlcli"]
    first_step = [sys.executable, str(ROOT / "benchmarks" / "token_cache.py"), "--child",
                  "train", data, "--epochs", "1", "--max-steps", "1", "--out", str(runs), "--quiet"]
    return {"import torch": [sys.executable, "-c", "import torch"],
            "mtl --help": [*mtl, "--help"],
            "mtl predict RUN": [*mtl, "predict", str(run), TEXT, "--format", "jsonl"],
            "mtl predict ONNX export": [*mtl, "predict", str(export), TEXT, "--format", "jsonl"],
            "mtl train, first step (warm token cache)": first_step}


def measured(argv: list[str], source: Path) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(source)}
    result = run_child(argv, env=env, cwd=str(source))
    ended_at_step = "--child" not in argv or STEP_MARK in result.stderr
    if result.returncode != 0 or not ended_at_step:
        raise SystemExit(f"{' '.join(argv)}: exit {result.returncode}\n{result.stderr[-2000:]}")
    return result.wall_s


def mtl(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "mtlcli", *args], check=True, env=env, cwd=str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "sample.csv"), help="training data (default: data/sample.csv)")
    parser.add_argument("--run", type=Path, help="a run folder to predict with (default: train one on --data)")
    parser.add_argument("--export", type=Path, help="its ONNX export (default: export --run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare-with", type=Path, help="another mtl checkout, measured in the same rounds")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = args.run or tmp / "runs" / "startup"
        if not args.run:
            mtl("train", args.data, "--epochs", "1", "--out", str(tmp / "runs"), "--name", "startup", "--quiet")
        export = args.export or tmp / "onnx"
        if not args.export:
            mtl("export", str(run), "--format", "onnx", "--out", str(export))
        sources = {"this checkout": ROOT, **({"compared": args.compare_with.resolve()} if args.compare_with else {})}
        commands = {label: programs(run, export, args.data, tmp / f"cache-{i}") for i, label in enumerate(sources)}
        for label, source in sources.items():  # fill each token cache: the timed runs read it
            measured(commands[label]["mtl train, first step (warm token cache)"], source)
        times: dict[str, dict[str, list[float]]] = {label: {name: [] for name in commands[label]} for label in sources}
        loads = [os.getloadavg()[0]]
        for round_ in range(args.repeats):
            for label, source in sources.items():
                for name, argv in commands[label].items():
                    if label != "this checkout" and name == "import torch":
                        continue  # the same program: measured once per round
                    times[label][name].append(measured(argv, source))
            loads.append(os.getloadavg()[0])
            print(f"round {round_ + 1}/{args.repeats} done, load {loads[-1]:.2f}", file=sys.stderr)

    torch_s = statistics.median(times["this checkout"]["import torch"])
    rows = []
    for label in sources:
        for name, seconds in times[label].items():
            if not seconds:
                continue
            median = statistics.median(seconds)
            rows.append({"source": label, "program": name, "median_s": round(median, 3),
                         "vs_import_torch": round(median / torch_s, 2), "all_s": [round(s, 3) for s in seconds]})
    print(f"\n{'source':<14} {'program':<42} {'median s':>9} {'x import torch':>15}")
    for r in rows:
        print(f"{r['source']:<14} {r['program']:<42} {r['median_s']:9.2f} {r['vs_import_torch']:15.2f}")
    print(f"\n1-minute load average: {min(loads):.2f} to {max(loads):.2f} (start, and after each round)")
    result = {
        "commands": {"import torch": 'python -c "import torch"', "mtl --help": "mtl --help",
                     "mtl predict RUN": f'mtl predict RUN "{TEXT}" --format jsonl',
                     "mtl predict ONNX export": f'mtl predict EXPORT "{TEXT}" --format jsonl',
                     "mtl train, first step (warm token cache)":
                         f"mtl train {args.data} --epochs 1 --max-steps 1, ended at its first optimizer step"},
        "measured": f"wall seconds of the whole process, median of {args.repeats} rounds taking turns",
        "run": str(args.run or "trained on --data with the bundled model, --epochs 1"),
        "machine": {**machine(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "load1_min": round(min(loads), 2), "load1_max": round(max(loads), 2)},
        "sources": {label: str(path) for label, path in sources.items()},
        "rows": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
