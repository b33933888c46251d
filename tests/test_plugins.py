"""Third-party plugins: installed with pip, listed by `mtl plugins`, trained with, reloaded for predict.

Packages are pip-installed into temporary folders (``pip install --target``) that a test puts on
sys.path, so nothing is installed into the environment itself and other tests never see them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from mtlcli.errors import UserError
from mtlcli.registry import PluginWarning, Registry, check_component, heads, refresh_all, set_warning_handler

pytestmark = pytest.mark.slow  # pip-installs packages, then trains with them

EXAMPLE = Path(__file__).resolve().parents[1] / "plugins" / "mtl-plugin-example"
PLUGIN_COMPONENTS = {("heads", "prototype"), ("poolers", "attention"), ("loss_combiners", "geometric"),
                     ("schedulers", "inverse_sqrt"), ("trackers", "csv"), ("task_types", "ordinal")}


def pip_install(project: Path, target: Path) -> Path:
    """``pip install PROJECT`` into ``target``, offline; builds in a copy so the source tree stays clean."""
    build = target.parent / f"{project.name}-build"
    shutil.copytree(project, build, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
                    "--no-deps", "--no-build-isolation", "--target", str(target), str(build)],
                   check=True, capture_output=True, text=True)
    return target


def make_package(folder: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> Path:
    """A minimal plugin project: pyproject.toml with entry points, and a package of modules."""
    package = name.replace("-", "_")
    groups = "\n".join(f'[project.entry-points."mtlcli.{kind}"]\n' + "\n".join(f'{k} = "{v}"' for k, v in eps.items())
                       for kind, eps in entry_points.items())
    (folder / package).mkdir(parents=True)
    (folder / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "0.0.1"

        [tool.setuptools]
        packages = ["{package}"]

        """) + groups + "\n")
    (folder / package / "__init__.py").write_text("")
    for module, source in modules.items():
        (folder / package / f"{module}.py").write_text(textwrap.dedent(source))
    return folder


@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    """The example plugin, pip-installed into a folder of its own."""
    return pip_install(EXAMPLE, tmp_path_factory.mktemp("example-site") / "site")


@pytest.fixture(scope="session")
def broken_site(tmp_path_factory) -> Path:
    """A plugin whose components fail in three ways: a missing dependency, a wrong class, not callable."""
    root = tmp_path_factory.mktemp("broken")
    project = make_package(
        root / "mtl-plugin-broken", "mtl-plugin-broken",
        {"heads": {"needs_missing_dep": "mtl_plugin_broken.missing:Head",
                   "not_a_module": "mtl_plugin_broken.wrong:NotAModule"},
         "schedulers": {"not_callable": "mtl_plugin_broken.wrong:RATE"}},
        {"missing": "import mtl_dependency_that_is_not_installed\n",
         "wrong": """\
             class NotAModule:
                 def __init__(self, in_features, num_labels):
                     pass

             RATE = 0.1
             """})
    return pip_install(project, root / "site")


@pytest.fixture(scope="session")
def clash_site(tmp_path_factory) -> Path:
    """A plugin that takes the name of a built-in head."""
    root = tmp_path_factory.mktemp("clash")
    project = make_package(root / "mtl-plugin-clash", "mtl-plugin-clash", {"heads": {"linear": "mtl_plugin_clash.heads:Head"}},
                           {"heads": "from torch import nn\n\nclass Head(nn.Linear):\n    pass\n"})
    return pip_install(project, root / "site")


@pytest.fixture
def installed(monkeypatch):
    """Make the packages in these folders visible, as if they were installed; undone after the test."""

    def add(*sites: Path) -> None:
        for site in sites:
            monkeypatch.syspath_prepend(str(site))
        refresh_all()

    yield add
    refresh_all()


def plugin_rows(result) -> dict[tuple[str, str], dict]:
    assert result.exit_code == 0, result.output
    return {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}


# ---- the example plugin -------------------------------------------------------------------------


def test_mtl_plugins_lists_the_example_components_as_ok(cli, installed, example_site):
    installed(example_site)
    rows = plugin_rows(cli("plugins", "--json"))
    for key in PLUGIN_COMPONENTS:
        assert rows[key]["source"] == "mtl-plugin-example" and rows[key]["version"] == "0.1.0"
        assert rows[key]["status"] == "ok" and rows[key]["error"] is None
    assert rows[("heads", "prototype")]["target"] == "mtl_plugin_example.heads:PrototypeHead"
    assert rows[("heads", "linear")]["source"] == "built-in" and rows[("heads", "linear")]["status"] == "ok"
    assert {k for k, r in rows.items() if r["source"] == "built-in"} == {
        ("poolers", "cls"), ("poolers", "mean"), ("poolers", "max"), ("heads", "linear"), ("heads", "mlp"),
        ("loss_combiners", "weighted"), ("loss_combiners", "uncertainty"), ("loss_combiners", "dwa"),
        ("schedulers", "linear"), ("schedulers", "cosine"), ("schedulers", "constant"),
        ("trackers", "tensorboard"), ("trackers", "mlflow"),
        ("task_types", "classification"), ("task_types", "multilabel"), ("task_types", "regression")}

    table = cli("plugins", "--kind", "head")
    assert table.exit_code == 0, table.output
    assert "prototype" in table.stdout and "mtl-plugin-example 0.1.0" in table.stdout
    assert "mlp" in table.stdout and "attention" not in table.stdout

    bad = cli("plugins", "--kind", "widgets")
    assert bad.exit_code == 2 and ("--kind widgets: not one of poolers, heads, loss_combiners, schedulers, "
                                     "trackers, task_types") in bad.output

    types = cli("plugins", "--kind", "task-type")
    assert types.exit_code == 0 and "ordinal" in types.stdout and "regression" in types.stdout


def test_train_with_plugin_components_then_predict(cli, installed, example_site, small_csv, train_args, tmp_path):
    installed(example_site)
    result = cli("train", small_csv, *train_args, "--name", "plug", "--head", "prototype", "--pooling", "attention",
                 "--loss-combiner", "geometric", "--scheduler", "inverse_sqrt", "--track", "csv")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "plug"
    tracked = (run / "tracked_metrics.csv").read_text().splitlines()
    assert len(tracked) == 3 and tracked[0].startswith("epoch,")  # a header and both epochs, from the plugin

    # the checkpoint records which package provided each component, and holds their trained weights
    ckpt = torch.load(next((run / "checkpoints").glob("best_epoch_*.pt")), weights_only=True)
    plugin = {"source": "mtl-plugin-example", "version": "0.1.0"}
    assert ckpt["components"] == {"pooler": {"name": "attention", **plugin}, "head": {"name": "prototype", **plugin},
                                  "loss_combiner": {"name": "geometric", **plugin},
                                  "scheduler": {"name": "inverse_sqrt", **plugin}}
    weights = ckpt["model"]
    assert weights["pooler.query"].abs().sum() > 0  # learned away from its mean-pooling start
    assert weights["heads.class_label.prototypes"].shape == (3, 32)
    assert float(weights["heads.class_label.log_scale"]) != pytest.approx(2.302585, abs=1e-7)  # log(10), its start

    from mtlcli.inference.loaded_run import load_run, predict_batches

    loaded = load_run(run, device="cpu", precision="fp32")
    assert type(loaded.model.pooler).__name__ == "AttentionPooler"
    texts = ["The laptop is excellent.", "The soup was a huge disappointment."]
    probs = predict_batches(loaded, texts)
    for task, labels in loaded.label_sets.items():
        assert probs[task].shape == (2, len(labels))
        assert probs[task].sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)

    predicted = cli("predict", run, *texts, "--format", "jsonl", "--device", "cpu", "--precision", "fp32")
    assert predicted.exit_code == 0, predicted.output
    records = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [r["text"] for r in records] == texts
    for i, record in enumerate(records):
        for task, labels in loaded.label_sets.items():
            assert record[task]["label"] == labels[int(probs[task][i].argmax())]
            assert record[task]["score"] == pytest.approx(float(probs[task][i].max()), abs=1e-5)


def test_train_eval_and_predict_an_ordinal_task_from_the_plugin(cli, installed, example_site, train_args, tmp_path):
    """A mixed table: a class column, and star ratings trained as ordered levels (--task-type rating=ordinal)."""
    from conftest import sample_rows, write_csv

    stars = {"negative": ("1", "2"), "neutral": ("3", "3"), "positive": ("4", "5")}
    rows = [[text, topic, stars[sentiment][i % 2]] for i, (text, topic, sentiment) in enumerate(sample_rows())]
    header = ["sentence", "topic", "rating"]
    train = write_csv(tmp_path / "train.csv", rows[:240], header)
    val = write_csv(tmp_path / "val.csv", rows[240:], header)
    installed(example_site)

    refused = cli("train", train, *train_args, "--task-type", "rating=ordinl")
    assert refused.exit_code == 2 and "unknown task type 'ordinl' (available: classification, multilabel, ordinal, " \
                                      "regression)" in refused.stderr

    result = cli("train", train, "--val", val, *train_args, "--name", "stars", "--task-type", "rating=ordinal",
                 "--epochs", "3", "--class-weight", "rating=balanced")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "stars"
    assert "rating: ordinal" in (run / "config.yaml").read_text()
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"val_rating_mae", "val_rating_acc", "val_rating_f1", "val_rating_within1", "val_topic_acc"} <= set(last)
    summary = json.loads((run / "summary.json").read_text())
    best = summary["best_metrics"]  # the epoch eval and predict load
    assert len(summary["class_weights"]["rating"]) == 4  # a positive weight per cut "rating > k"
    check = summary["task_checks"]["rating"]  # did it learn: against always answering the median level
    assert check["baseline"].startswith("always answering '") and check["mae"] == best["val_rating_mae"]

    scored = cli("eval", run, val, "--json", "--device", "cpu")
    assert scored.exit_code == 0, scored.output
    report = json.loads(scored.stdout)["tasks"]
    assert report["rating"]["type"] == "ordinal" and report["rating"]["labels"] == ["1", "2", "3", "4", "5"]
    assert report["rating"]["mae"] == pytest.approx(best["val_rating_mae"], abs=1e-6)
    assert report["topic"]["type"] == "classification"

    texts = ["The laptop is excellent.", "The soup was a huge disappointment."]
    predicted = cli("predict", run, *texts, "--format", "jsonl", "--top-k", "2", "--device", "cpu")
    assert predicted.exit_code == 0, predicted.output
    for record in map(json.loads, predicted.stdout.splitlines()):
        rating = record["rating"]
        assert rating["label"] in {"1", "2", "3", "4", "5"} and 0 < rating["score"] <= 1
        assert 1 <= rating["expected"] <= 5 and len(rating["top"]) == 2
        assert record["topic"]["label"]
    as_csv = cli("predict", run, *texts, "--format", "csv", "--device", "cpu")
    assert as_csv.exit_code == 0 and as_csv.stdout.splitlines()[0] == "text,topic,topic_score,rating,rating_score"


def test_a_run_whose_plugin_is_gone_says_which_package_to_install(cli, installed, example_site, small_csv,
                                                                   train_args, tmp_path, monkeypatch):
    installed(example_site)
    assert cli("train", small_csv, *train_args, "--name", "p", "--head", "prototype", "--epochs", "1").exit_code == 0
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(example_site)])  # "pip uninstall"
    refresh_all()
    from mtlcli.inference.loaded_run import load_run

    with pytest.raises(UserError, match=r"the run uses the head 'prototype' from the package mtl-plugin-example "
                                        r"0\.1\.0, which is not installed; install it with: "
                                        r"pip install 'mtl-plugin-example==0\.1\.0'"):
        load_run(tmp_path / "runs" / "p", device="cpu")
    result = cli("predict", tmp_path / "runs" / "p", "some text")
    assert result.exit_code == 2
    assert "pip install 'mtl-plugin-example==0.1.0'" in result.stderr and "Traceback" not in result.output


def test_help_and_discovery_import_no_plugin(example_site):
    """`mtl --help` touches neither torch nor plugins; listing names reads metadata only."""
    script = textwrap.dedent("""\
        import sys
        from mtlcli.cli.app import app
        try:
            app(["--help"])
        except SystemExit:
            pass
        print("after help:", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "mtl_plugin_example")))
        from mtlcli.registry import heads
        print("names:", heads.names())
        print("after names:", sorted(m for m in sys.modules if m.startswith("mtl_plugin_example")))
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(example_site), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True).stdout
    assert "after help: []" in out
    assert "names: ['prototype']" in out  # built-ins are not imported either, only the plugin's metadata read
    assert "after names: []" in out


# ---- broken plugins -------------------------------------------------------------------------------


def test_a_broken_plugin_is_listed_as_failed_and_training_still_works(cli, installed, broken_site, example_site,
                                                                      small_csv, train_args, tmp_path):
    installed(broken_site, example_site)
    result = cli("plugins", "--json")
    rows = plugin_rows(result)
    failed = {k: r["error"] for k, r in rows.items() if r["status"] == "failed"}
    assert set(failed) == {("heads", "needs_missing_dep"), ("heads", "not_a_module"), ("schedulers", "not_callable")}
    assert failed[("heads", "needs_missing_dep")] == ("ModuleNotFoundError: No module named "
                                                      "'mtl_dependency_that_is_not_installed'")
    assert failed[("heads", "not_a_module")] == ("mtl_plugin_broken.wrong:NotAModule is a class but not a "
                                                 "torch.nn.Module subclass")
    assert "mtl_plugin_broken.wrong:RATE is a float, not a class or function" == failed[("schedulers", "not_callable")]
    assert all(rows[k]["status"] == "ok" for k in PLUGIN_COMPONENTS)  # the other plugin keeps working
    # one warning per broken component on stderr, naming plugin, package and error; stdout stays JSON
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3
    assert ("warning: skipping plugin head 'needs_missing_dep' from mtl-plugin-broken 0.0.1: ModuleNotFoundError: "
            "No module named 'mtl_dependency_that_is_not_installed'") in warnings

    table = cli("plugins")
    row = next(line for line in table.stdout.splitlines() if "needs_missing_dep" in line)
    assert table.exit_code == 0 and "mtl-plugin-broken" in row and "failed" in row

    trained = cli("train", small_csv, *train_args, "--name", "builtins", "--epochs", "1")
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "runs" / "builtins" / "summary.json").is_file()

    used = cli("train", small_csv, *train_args, "--head", "needs_missing_dep")
    assert used.exit_code == 2
    assert ("error: head 'needs_missing_dep' from mtl-plugin-broken 0.0.1 failed to load: ModuleNotFoundError: "
            "No module named 'mtl_dependency_that_is_not_installed'") in used.stderr


def test_strict_mode_turns_a_broken_plugin_into_an_error(cli, installed, broken_site, small_csv, train_args,
                                                         monkeypatch, tmp_path):
    installed(broken_site)
    monkeypatch.setenv("MTL_STRICT_PLUGINS", "1")
    result = cli("train", small_csv, *train_args, "--epochs", "1")
    assert result.exit_code == 2
    assert "error: head 'needs_missing_dep' from mtl-plugin-broken 0.0.1: ModuleNotFoundError" in result.stderr
    assert "(MTL_STRICT_PLUGINS=1 makes this an error)" in result.stderr
    assert not list(tmp_path.glob("runs/*/config.yaml"))  # it stopped before creating a run
    assert cli("plugins").exit_code == 2


def test_warnings_are_given_once_per_plugin(installed, broken_site):
    installed(broken_site)
    set_warning_handler(None)  # Python warnings, as a library user gets them (the CLI prints them instead)
    with pytest.warns(PluginWarning) as first:
        list(heads.entries(load=True))
    assert sorted(str(w.message).split("'")[1] for w in first) == ["needs_missing_dep", "not_a_module"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)  # a second warning would raise here
        list(heads.entries(load=True))


def test_a_name_taken_twice_is_an_error_naming_both_packages(cli, installed, clash_site, small_csv, train_args):
    installed(clash_site)
    clash = ("two or more heads are named 'linear': from mtlcli 0.1.0 (built-in) and from mtl-plugin-clash 0.0.1; "
             "uninstall all but one of these packages")
    result = cli("train", small_csv, *train_args)
    assert result.exit_code == 2 and f"error: {clash}" in result.stderr
    rows = json.loads(cli("plugins", "--json", "--kind", "heads").stdout)
    linear = [r for r in rows if r["name"] == "linear"]
    assert [(r["source"], r["status"], r["error"]) for r in linear] == [("built-in", "failed", clash),
                                                                       ("mtl-plugin-clash", "failed", clash)]
    assert heads.get("mlp").__name__ == "MLPHead"  # other names keep working


def test_the_example_imports_only_the_public_interface():
    imports = set()
    for source in (EXAMPLE / "src").rglob("*.py"):
        for line in source.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and words[1].split(".")[0] == "mtlcli":
                imports.add(words[1])
    assert imports == {"mtlcli.plugin"}


# ---- interface checks ----------------------------------------------------------------------------


def test_interface_checks_per_kind():
    from torch import nn

    class Good(nn.Module):
        def __init__(self, in_features, num_labels, scale=1.0):
            super().__init__()

    def factory(in_features, num_labels):
        return nn.Linear(in_features, num_labels)

    assert check_component("heads", Good) is None and check_component("heads", factory) is None
    assert check_component("heads", Good(2, 3)) == ("is a Good object, not a class or factory; "
                                                    "point the entry point at the class")
    assert check_component("heads", dict) == "is a class but not a torch.nn.Module subclass"
    assert check_component("poolers", Good) == ("cannot be called as Pooler(hidden_size, **pooler_options): "
                                                "missing a required argument: 'num_labels'")
    assert check_component("schedulers", "linear") == "is a str, not a class or function"
    assert check_component("schedulers", lambda optimizer, total: None).startswith("cannot be called as scheduler(")
    with pytest.raises(TypeError, match="head 'bad' is a class but not a torch.nn.Module subclass"):
        Registry("heads").register("bad", dict)

