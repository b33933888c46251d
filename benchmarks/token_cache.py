"""Time to the first training step of `mtl train`, whole process, with a cold token cache and a warm one.

    OMP_NUM_THREADS=1 python benchmarks/token_cache.py --data ../shared/data/womens_clothing_reviews.csv \\
        --out benchmarks/results/token-cache.json

Runs `mtl train DATA --epochs 1 --max-steps 1` (the bundled model, default settings) as a child
process, three ways, in this order: `--no-token-cache` (tokenizes, keeps nothing), cold (a new
folder of runs: tokenizes and writes the cache) and warm (the same folder again: reads the cache).
The child notes the end of its first optimizer step and exits there, so the time is the start-up
(imports, reading the file, tokenizing or reading the cache, loading the model) and one step, not
the validation and checkpoints that would follow. `--repeats N` runs the three N times.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from children import run_child, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STEP_MARK = "first optimizer step done at"


def child(argv: list[str]) -> None:
    """`mtl ARGS` in this process, ending it once the loop reports its first optimizer step."""
    from mtlcli.training.reporter import Reporter

    def first_step(self, *args, **kwargs) -> None:
        print(f"{STEP_MARK} {time.time():.3f}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(0)  # nothing after the first step is measured: no validation, no checkpoint

    Reporter.batch_end = first_step  # the displays a non-terminal run uses do not override it
    sys.argv = ["mtl", *argv]
    from mtlcli.cli.app import main

    main()


def measure(name: str, data: str, out: Path, extra: list[str]) -> dict:
    argv = [sys.executable, __file__, "--child", "train", data, "--epochs", "1", "--max-steps", "1",
            "--out", str(out), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = run_child(argv, env=env, cwd=str(ROOT))
    if result.returncode != 0 or STEP_MARK not in result.stderr:
        raise SystemExit(f"{name}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    tokens = re.search(r"^(Tokenized .*|Tokens .*)$", result.stderr, re.M)  # the display writes to stderr
    cache = out / ".cache" / "tokens"
    return {"name": name, "seconds_to_first_step": round(result.wall_s, 2), "cpu_s": round(result.cpu_s, 2),
            "max_rss_mb": round(result.max_rss_mb, 1), "load1_before": round(result.load1_before, 2),
            "tokens_line": tokens.group(1) if tokens else None,
            "cache_mb": round(sum(p.stat().st_size for p in cache.iterdir()) / 1e6, 2) if cache.is_dir() else 0.0}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "womens_clothing_reviews.csv"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    load_at_start = round(os.getloadavg()[0], 2)
    rows = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            runs = Path(folder) / "runs"
            rows.append(measure("--no-token-cache", args.data, Path(folder) / "off", ["--no-token-cache"]))
            rows.append(measure("cold cache", args.data, runs, []))
            rows.append(measure("warm cache", args.data, runs, []))
        for row in rows[-3:]:
            print(f"{row['name']:>16}: {row['seconds_to_first_step']:6.2f} s to the first step "
                  f"({row['cpu_s']:.1f} CPU s, load {row['load1_before']:.2f} before) | {row['tokens_line']}")
    result = {
        "command": f"mtl train {args.data} --epochs 1 --max-steps 1 --out RUNS, ended at its first optimizer step",
        "measured": "wall seconds from starting the process to the end of the first optimizer step",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "python": platform.python_version(),
                    "load1_at_start": load_at_start},
        "runs": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
