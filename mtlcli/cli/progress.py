"""What `mtl train` shows: a live Rich display on a terminal, plain lines elsewhere, or only the end.

Progress (the start, each epoch, the live bar) goes to standard error; the final summary is the
command's result and goes to standard output.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mtlcli.reports import plots
from mtlcli.cli.common import print_warning
from mtlcli import vocabulary as vocab
from mtlcli.training.reporter import Reporter


class _ShowsWarnings(Reporter):
    """What every display below shares: a warning is one line on stderr."""

    def warning(self, message: str) -> None:
        print_warning(message)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def epoch_line(row: dict[str, Any], tasks: list[str], improved: bool) -> str:
    """One epoch: the losses, each task's validation scores by their short names (training's, in a run
    without validation), the speed."""
    losses = (k for k in (vocab.TRAIN_LOSS, vocab.VAL_LOSS) if k in row)
    parts = [f"epoch {row[vocab.EPOCH]}", *(f"{k} {row[k]:.4f}" for k in losses)]
    split = vocab.VAL if vocab.VAL_LOSS in row else vocab.TRAIN
    named = "" if split == vocab.VAL else f"{split} "  # validation's scores go unnamed, as they always have
    for t in tasks:
        scores = [m for m in vocab.metrics(row, t, split) if m != vocab.LOSS]
        parts.append(" ".join([t, *(f"{named}{m.column} {row[vocab.key(split, t, m)]:.3f}" for m in scores)]))
    parts.append(f"{row[vocab.TRAIN_SPEED]:.0f} sent/s, {row[vocab.SECONDS]:.1f}s")
    return " | ".join(parts) + (" | new best, saved" if improved else "")


CHOSEN = "--task-type"  # the reason a task's type was given rather than inferred


def token_line(tokens: dict[str, Any]) -> str:
    """Where the token ids came from: the token cache, the tokenizer, or both."""
    cached, tokenized, seconds = tokens["cached"], tokens["tokenized"], tokens["seconds"]
    if not tokenized:
        return f"Tokens from the cache ({cached:,} texts, {seconds:.1f} s); --no-token-cache tokenizes them again"
    if cached:
        return f"Tokens of {cached:,} texts from the cache, {tokenized:,} tokenized ({seconds:.1f} s)"
    kept = (f"; kept in {tokens['cache']} for the next run on these texts" if tokens["cache"]
            else " (--no-token-cache: not kept)")
    return f"Tokenized {tokenized:,} texts in {seconds:.1f} s{kept}"


def task_lines(info: dict[str, Any]) -> list[str]:
    """A line per task: its type, its labels and why it has that type; then how to choose another."""
    from mtlcli.registry import task_types

    types = info.get("task_types") or {}
    lines = []
    for task, labels in info["tasks"].items():
        found = types.get(task) or {"type": "classification", "why": ""}
        why = found.get("why") or ""
        why = "set with --task-type or in the run's config" if why == CHOSEN else why
        lines.append(f"  {task}: {found['type']}" + (f", {len(labels)} labels" if labels else "")
                     + (f" ({why})" if why else ""))
    if any(t.get("why") != CHOSEN for t in types.values()):
        lines.append(f"  a type not set is read from the cells; {CHOSEN} TASK=TYPE sets it "
                     f"({', '.join(task_types.names())})")
    return lines


class PlainReporter(_ShowsWarnings):
    """One line per epoch: for pipes, CI logs and files."""

    def __init__(self, out: Console, console: Console):
        self.out = out  # the final summary
        self.console = console  # progress
        self.tasks: list[str] = []
        self.types: dict[str, str] = {}

    def train_start(self, info):
        self.tasks = list(info["tasks"])
        self.types = types_of(info)
        validating = (f"validating on {info['val_rows']}" if info["val_rows"]
                      else "no validation (--val-split 0: the last epoch is kept)")
        testing = f", testing on {info['test_rows']} at the end" if info.get("test_rows") else ""
        self.console.print(
            f"Training on {info['train_rows']} rows, {validating}{testing}; {len(self.tasks)} "
            f"task{'s' if len(self.tasks) != 1 else ''}; device {info['device']} ({info['precision']}); "
            f"run folder {info['run']}", soft_wrap=True, markup=False)
        for line in task_lines(info):
            self.console.print(line, soft_wrap=True, markup=False, highlight=False)
        if info.get("max_length_auto"):
            self.console.print(f"Max length {info['max_length']} tokens (auto: 95% of the training texts fit whole; "
                               "--max-length N to change)", soft_wrap=True, markup=False)
        if info.get("tokens"):
            self.console.print(token_line(info["tokens"]), soft_wrap=True, markup=False, highlight=False)
        if info["device"].startswith("cuda") and info["cuda_graphs"] not in ("on", "--no-cuda-graphs"):
            self.console.print(f"Training steps run op by op, not as CUDA graphs: {info['cuda_graphs']}",
                               soft_wrap=True, markup=False)
        if info.get("resumed_from"):
            epoch, step = info["resumed_from"]
            where = f"epoch {epoch}" + (f" after batch {step}" if step else "")
            self.console.print(f"Resuming in {where} from checkpoints/last.pt", soft_wrap=True, markup=False)

    def epoch_end(self, row, improved):
        self.console.print(epoch_line(row, self.tasks, improved), soft_wrap=True, markup=False)

    def train_end(self, summary):
        show_summary(self.out, summary, chart=True, types=self.types)


class LiveReporter(PlainReporter):
    """A Rich progress bar per epoch with loss, sentences/s and ETA."""

    def __init__(self, out: Console, console: Console):
        super().__init__(out, console)
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} sent/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
        self.task_id = None

    def train_start(self, info):
        super().train_start(info)
        self.progress.start()

    def epoch_start(self, epoch, steps):
        self.task_id = self.progress.add_task("train", total=steps, epoch=epoch, loss="-", speed="-")

    def batch_end(self, epoch, step, steps, loss, sentences_per_s):
        fields = {"speed": f"{sentences_per_s:.0f}"}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        self.progress.update(self.task_id, completed=step, **fields)

    def validation_start(self, epoch):
        self.progress.update(self.task_id, description="validate", loss="validating")

    def epoch_end(self, row, improved):
        if isinstance(row[vocab.EPOCH], int):
            self.progress.remove_task(self.task_id)
        else:  # a validation mid-epoch (--eval-steps): the epoch's bar goes on
            self.progress.update(self.task_id, description="train", loss="-")
        self.console.print(epoch_line(row, self.tasks, improved), soft_wrap=True, markup=False,
                           style="green" if improved else None)

    def train_end(self, summary):
        self.progress.stop()
        super().train_end(summary)

    def close(self):
        self.progress.stop()  # idempotent; gives the terminal its cursor back after an error


class QuietReporter(_ShowsWarnings):
    def __init__(self, console: Console):
        self.console = console
        self.types: dict[str, str] = {}

    def train_start(self, info):
        self.types = types_of(info)

    def train_end(self, summary):
        show_summary(self.console, summary, chart=False, types=self.types)


def types_of(info: dict[str, Any]) -> dict[str, str]:
    """Task -> its type's name, from the start of a run."""
    return {t: found["type"] for t, found in (info.get("task_types") or {}).items()}


def show_summary(console: Console, summary: dict[str, Any], chart: bool, types: dict[str, str] | None = None) -> None:
    rows = summary.get("rows") or []
    if chart and len(rows) >= 1:
        console.print(plots.terminal_chart({"run": rows}, vocab.LOSS.label, [vocab.TRAIN_LOSS, vocab.VAL_LOSS],
                                           {"run": summary.get("best_epoch") or None}, width=min(console.width, 100)),
                      markup=False, highlight=False)
    best = summary.get("best_metrics") or {}
    if not best:  # stopped (signal, NaN loss) before any epoch finished
        console.print(f"Run folder {summary['run']}: no epoch finished, so there is no best checkpoint",
                      soft_wrap=True, markup=False)
        return
    validated = vocab.VAL_LOSS in best
    if validated:
        best_epoch = summary["best_epoch"]
        where = (f"Best epoch {best_epoch} of {summary['epochs_run']}" if isinstance(best_epoch, int) else
                 # a validation within an epoch (--eval-steps): its step says more than a count of whole epochs
                 f"Best validation at epoch {best_epoch} (step {summary.get('best_step')} of {summary.get('steps_run')})")
        console.print(where + (" (stopped early)" if summary.get("stopped_early") else "") + ", validation scores:",
                      soft_wrap=True, markup=False, highlight=False)
    else:
        kept = (f"the last epoch, {summary['best_epoch']} of {summary['epochs_run']}"
                if isinstance(summary["best_epoch"], int) else  # --max-steps spent within an epoch
                f"where --max-steps ended, epoch {summary['best_epoch']} (step {summary.get('best_step')})")
        console.print(f"Kept {kept} (no validation: --val-split 0), training scores:", soft_wrap=True, markup=False,
                      highlight=False)
    for table in best_tables(best, types or {}, vocab.VAL if validated else vocab.TRAIN):
        console.print(table)
    test = vocab.scores_on_test(summary)
    if test:
        console.print(f"Test scores of that checkpoint on {summary['test']['n']} rows of {summary['test']['data']}:",
                      soft_wrap=True, markup=False, highlight=False)
        for table in best_tables(test, types or {}, vocab.TEST):
            console.print(table)
    for warning in summary.get("warnings") or []:
        print_warning(warning)
    console.print(f"Run saved in {summary['run']} (best checkpoint {summary['best_checkpoint']})", soft_wrap=True, markup=False)


def best_tables(best: dict[str, Any], types: dict[str, str], split: str = vocab.VAL) -> list[Table]:
    """A table per task type (tasks whose rows hold the same metrics on ``split``): a row per task, a
    column per metric of that type, so no cell is empty and a table stays narrow."""
    tables = []
    for columns, tasks in vocab.groups(best, vocab.tasks(best), split):
        title = ", ".join(dict.fromkeys(types.get(t, "") for t in tasks if types.get(t)))
        table = Table(title=title or None, title_justify="left")
        table.add_column("task", overflow="fold")
        for m in columns:
            table.add_column(m.column, justify="right", no_wrap=True)
        for t in tasks:
            table.add_row(t, *(_fmt(best.get(vocab.key(split, t, m))) for m in columns))
        tables.append(table)
    return tables


def make_reporter(out: Console, err: Console, quiet: bool) -> Reporter:
    if quiet:
        return QuietReporter(out)
    return LiveReporter(out, err) if err.is_terminal else PlainReporter(out, err)
