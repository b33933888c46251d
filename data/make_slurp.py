"""Build data/slurp.csv from the SLURP corpus's text annotations (CC BY 4.0).

Source: github.com/pswietojanski/slurp, commit 8eb1654, files dataset/slurp/devel.jsonl and
dataset/slurp/test.jsonl (the training file is kept out of that repository's plain git history).
Each record is one spoken request to a home assistant, transcribed, with the scenario it belongs to
and the action it asks for. Exact duplicate sentences keep their first record.

    python data/make_slurp.py devel.jsonl test.jsonl > data/slurp.csv
"""

import csv
import json
import sys


def main(paths: list[str]) -> None:
    seen = set()
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["sentence", "scenario", "action"])
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                text = " ".join(record["sentence"].split())
                if text and text not in seen:
                    seen.add(text)
                    writer.writerow([text, record["scenario"], record["action"]])


if __name__ == "__main__":
    main(sys.argv[1:])
