"""Cut disjoint parts out of a CSV for runs that cannot take all of it: a seeded shuffle, then slices.

    python benchmarks/subset.py ../shared/data/womens_mixed_train.csv --seed 0 \
        --part val=0:1000 --part train=1000:3000 --out-dir subsets

writes subsets/womens_mixed_train-val.csv (shuffled rows 0-999) and -train.csv (rows 1000-2999),
each with the header. The same seed gives the same rows, so parts cut in two calls stay disjoint.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", action="append", required=True, help="NAME=START:END of the shuffled rows")
    parser.add_argument("--out-dir", type=Path, default=Path("."))
    args = parser.parse_args()
    with open(args.data, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    random.Random(args.seed).shuffle(rows)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for part in args.part:
        name, _, span = part.partition("=")
        start, end = (int(x) for x in span.split(":"))
        out = args.out_dir / f"{args.data.stem}-{name}.csv"
        with open(out, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header, *rows[start:end]])
        print(f"{out}: {len(rows[start:end])} rows")


if __name__ == "__main__":
    main()
