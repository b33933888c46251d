"""The CSV tracker: a header, then one row per epoch; a resumed run appends."""

import csv

from mtl_plugin_example.trackers import FILE, CsvTracker


def read(path):
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_one_row_per_epoch_and_resume_appends(tmp_path):
    tracker = CsvTracker()
    tracker.start({"epochs": 2}, tmp_path, resumed=False)
    tracker.log_metrics({"epoch": 1, "val_loss": 0.5}, 1)
    tracker.log_metrics({"epoch": 2, "val_loss": 0.25}, 2)
    tracker.finish(tmp_path, {})
    assert read(tmp_path / FILE) == [{"epoch": "1", "val_loss": "0.5"}, {"epoch": "2", "val_loss": "0.25"}]

    again = CsvTracker()
    again.start({"epochs": 3}, tmp_path, resumed=True)
    again.log_metrics({"epoch": 3, "val_loss": 0.125}, 3)
    assert [r["epoch"] for r in read(tmp_path / FILE)] == ["1", "2", "3"]

    fresh = CsvTracker()
    fresh.start({}, tmp_path, resumed=False)  # a new run in the same folder starts the file over
    assert not (tmp_path / FILE).exists()
