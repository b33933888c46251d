"""A tracker that keeps each epoch's metrics as a CSV row, for spreadsheets: <run>/tracked_metrics.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from mtlcli.plugin import Tracker

FILE = "tracked_metrics.csv"


class CsvTracker(Tracker):
    def start(self, config, run_dir, resumed):
        self.path = Path(run_dir) / FILE
        if not resumed:
            self.path.unlink(missing_ok=True)

    def log_metrics(self, row, epoch):
        header = not self.path.exists()
        with self.path.open("a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if header:
                writer.writeheader()
            writer.writerow(row)
