"""Random and hostile CSV and config files: each loads correctly or is one `error:` line, exit code 2.

Property-based (hypothesis). The reader is called directly for the many generated files, and a
smaller share goes through the real CLI. CLI runs pass --model pointing at a folder that does not
exist, so a file that passes the data checks ends on a model error (also exit 2) instead of
training. Each property runs a modest number of examples so the suite stays fast; a deadline per
example turns a hang into a failure.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from conftest import sample_rows, write_csv
from mtlcli import config as config_mod
from mtlcli.data import tables as data_mod
from mtlcli.tasks.columns import load_train_val
from mtlcli.errors import UserError

NO_MODEL = ["--model", "/nonexistent/model", "--quiet"]
CHECKS = dict(deadline=60_000, database=None,  # a hang fails, a loaded machine does not; no example database
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HEADER = ["sentence", "class_label", "sentiment_label"]
BIG = 200_000  # characters: longer than Python csv's default field limit (131,072)


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def one_line(message: str) -> None:
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert len(message) < 2000, len(message)


def read(path: Path):
    """The reader as training calls it; returns the table or the UserError's message."""
    try:
        return load_train_val(str(path), None, "sentence", [], 0.2, 42)
    except UserError as exc:
        one_line(str(exc))
        return str(exc)


def cli_rejects(cli, path: Path) -> str:
    result = cli("train", path, *NO_MODEL)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# ---- files that are valid CSV must load exactly, whatever the text holds ----------------------

texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=40).filter(
    lambda t: t.strip())
rows = st.lists(st.tuples(texts, st.sampled_from(["a", "b", ""]), st.sampled_from(["x", "y"])), min_size=1, max_size=8)


def encode(table: list[list[str]], newline: str, bom: bool) -> bytes:
    """RFC 4180: a field is quoted when it holds a comma, a quote, CR or LF (Python 3.11's csv.writer
    leaves a lone CR unquoted when the line ends are LF, which makes the file ambiguous)."""
    def field(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\r\n') else v

    text = "".join(",".join(field(v) for v in row) + newline for row in table)
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


@settings(max_examples=150, **CHECKS)
@given(body=rows, newline=st.sampled_from(["\n", "\r\n", "\r"]), bom=st.booleans())
@example(body=[("line\u2028separator", "a", "x"), ("form\x0cfeed and NEL\x85", "b", "y")], newline="\n", bom=False)
@example(body=[("quoted, \"comma\"\r\nand CRLF inside", "a", "x")], newline="\r\n", bom=True)
def test_valid_csv_loads_exactly(folder, body, newline, bom):
    path = folder / "valid.csv"
    path.write_bytes(encode([HEADER, *[list(r) for r in body]], newline, bom))
    table = data_mod.read_table(path, "sentence", [])
    assert table.texts == [r[0].strip() for r in body]
    assert table.labels == {"class_label": [r[1] for r in body], "sentiment_label": [r[2] for r in body]}


def test_bom_and_crlf_train_like_a_plain_file(tmp_path):
    rows = sample_rows(60)
    plain = write_csv(tmp_path / "plain.csv", rows)
    excel = tmp_path / "excel.csv"
    excel.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    a, b = read(plain), read(excel)
    assert not isinstance(b, str), b
    assert a[0].texts == b[0].texts and a[1].labels == b[1].labels and a[2] == b[2]


# ---- hostile files: load or one clear line, never a traceback or a hang -----------------------


def _mutate(data: bytes, how: str, where: int) -> bytes:
    at = where % (len(data) + 1)
    return {
        "nul": data[:at] + b"\x00" + data[at:],
        "bad_utf8": data[:at] + b"\xff\xfe\xc3" + data[at:],
        "quote": data[:at] + b'"' + data[at:],
        "truncate": data[:at],
        "bom_twice": b"\xef\xbb\xbf\xef\xbb\xbf" + data,
        "lone_cr": data.replace(b"\n", b"\r"),
        "huge_field": data[:at] + b"x" * BIG + data[at:],
        "wide": b",".join([b"sentence"] + [b"c%d" % i for i in range(3000)]) + b"\n" + data,
        "header_only": data.split(b"\n", 1)[0] + b"\n",
    }[how]


hostile = st.tuples(rows, st.lists(st.tuples(st.sampled_from(
    ["nul", "bad_utf8", "quote", "truncate", "bom_twice", "lone_cr", "huge_field", "wide", "header_only"]),
    st.integers(0, 10_000)), min_size=1, max_size=3))


def _write_hostile(path, case):
    """A valid CSV with the case's mutations applied, written to ``path``."""
    body, mutations = case
    data = encode([HEADER, *[list(r) for r in body]], "\n", False)
    for how, where in mutations:
        data = _mutate(data, how, where)
    path.write_bytes(data)
    return path


@settings(max_examples=150, **CHECKS)
@given(case=hostile)
def test_hostile_csv_loads_or_fails_in_one_line(folder, case):
    read(_write_hostile(folder / "hostile.csv", case))


@settings(max_examples=100, **CHECKS)
@given(data=st.binary(max_size=2000))
def test_random_bytes_load_or_fail_in_one_line(folder, data):
    path = folder / "bytes.csv"
    path.write_bytes(data)
    read(path)


@settings(max_examples=40, **CHECKS)
@given(case=hostile)
def test_hostile_csv_through_the_cli_is_exit_2_and_one_line(cli, tmp_path, case):
    cli_rejects(cli, _write_hostile(tmp_path / "hostile.csv", case))


@pytest.mark.parametrize("name, data, needle", [
    ("nul.csv", b"sentence,class_label\nhello\x00,a\n", "nul.csv:2: not a text file (contains NUL bytes)"),
    ("latin1.csv", "sentence,class_label\nnaïve,a\n".encode("latin-1"), "latin1.csv:2: not UTF-8"),
    ("quote.csv", b'sentence,class_label\n"never closed,a\nnext,b\n', "quote.csv:2:"),
    ("header.csv", b"sentence,class_label,sentiment_label\r\n", "header.csv: has a header but no rows"),
    ("bom_only.csv", b"\xef\xbb\xbf", "bom_only.csv: the file is empty"),
    ("wide.csv", (",".join(["sentence"] + [f"c{i}" for i in range(5000)]) + "\n"
                  + "".join(f"row {i}" + f",{'ab'[i % 2]}" * 5000 + "\n" for i in range(10))).encode(),
     "model '/nonexistent/model'"),  # 5,000 task columns load; the run then stops on the model
])
def test_each_kind_of_hostile_csv_is_named(cli, tmp_path, name, data, needle):
    path = tmp_path / name
    path.write_bytes(data)
    assert needle in cli_rejects(cli, path)


def test_a_field_longer_than_csv_default_limit_loads(tmp_path):
    long_text = "word " * (BIG // 5)
    rows = [[long_text, "a", "x"], ["short", "b", "y"]]
    table = data_mod.read_table(write_csv(tmp_path / "long.csv", rows), "sentence", [])
    assert table.texts[0] == long_text.strip() and len(table.texts[0]) > 131_072


def test_error_messages_quote_hostile_values_on_one_line(tmp_path):
    label = "bad\nlabel\x1b[31m" + "z" * 5000
    train = write_csv(tmp_path / "t.csv", [["one", "a"], ["two", "b"]], header=["sentence", "class_label"])
    val = write_csv(tmp_path / "v.csv", [["three", label]], header=["sentence", "class_label"])
    with pytest.raises(UserError) as err:
        load_train_val(str(train), str(val), "sentence", [], 0.2, 42)
    one_line(str(err.value))
    assert "\x1b" not in str(err.value) and "v.csv:2: label 'bad\\nlabel" in str(err.value)


# ---- config files ------------------------------------------------------------------------------

leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=30))
values = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                    st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
keys = st.one_of(st.sampled_from(sorted(config_mod.FIELDS)), st.text(max_size=20))


def resolve_or_message(path: Path):
    try:
        return config_mod.resolve(path, {})
    except UserError as exc:
        one_line(str(exc))
        return str(exc)


def check_usable(cfg: config_mod.TrainConfig, folder: Path) -> None:
    """An accepted config survives what a run does with it: config.yaml and every checkpoint."""
    again = yaml.safe_load(config_mod.dump(cfg))
    assert config_mod.TrainConfig(**config_mod.check_values(again, "again")) == cfg or _has_nan(cfg)
    torch.save({"config": cfg.to_dict()}, folder / "c.pt")
    torch.load(folder / "c.pt", weights_only=True)  # a config in a checkpoint must load safely
    for key in ("lr_backbone", "lr_heads", "weight_decay", "max_grad_norm", "val_split", "warmup_ratio"):
        assert math.isfinite(getattr(cfg, key)), key


def _has_nan(cfg) -> bool:
    return any(isinstance(v, float) and math.isnan(v) for v in cfg.to_dict().values())


@settings(max_examples=150, **CHECKS)
@given(mapping=st.dictionaries(keys, values, max_size=5))
def test_random_config_mappings_load_or_fail_in_one_line(folder, mapping):
    path = folder / "random.yaml"
    path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    cfg = resolve_or_message(path)
    if not isinstance(cfg, str):
        check_usable(cfg, folder)


@settings(max_examples=150, **CHECKS)
@given(text=st.text(max_size=200))
@example(text="- a list\n- not a mapping\n")
@example(text="lr_heads: [1, 2]\n")
@example(text="pooler_options: {when: 2024-01-01}\n")
@example(text="pooler_options: !!binary aGVsbG8=\n")
@example(text="\"bad\\nkey\": 1\n")
@example(text="seed: -1\n")
@example(text="data: \"a\\0b\"\n")
@example(text="name: \"../../x\"\n")
def test_random_config_text_loads_or_fails_in_one_line(folder, text):
    path = folder / "random.yaml"
    path.write_text(text, encoding="utf-8")
    cfg = resolve_or_message(path)
    if not isinstance(cfg, str):
        check_usable(cfg, folder)


@pytest.mark.parametrize("text, needle", [
    ("epochs: [1, 2]\n", "key 'epochs' must be an integer"),
    ("no_such_key: 1\n", "unknown key 'no_such_key'"),
    ("- 1\n- 2\n", "must be a mapping of keys to values, got list"),
    ("lr_heads: .nan\n", "lr_heads"),
    ("seed: -1\n", "seed"),
    ("pooler_options: {when: 2024-01-01}\n", "pooler_options"),
    ("a: &a [1, 2]\nb: [*a, *a]\npooler_options: {x: *a}\n", "unknown key 'a'"),
    ("x: \"\\xff\"\n\"\\e[31mred\": 1\n", "unknown key 'x'"),
])
def test_bad_config_files_through_the_cli(cli, small_csv, tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    result = cli("train", small_csv, "--config", path, *NO_MODEL)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and needle in lines[0], result.output


def test_a_config_that_is_not_utf8_or_has_a_nul(cli, small_csv, tmp_path):
    for name, data in (("latin.yaml", "pooling: caf\xe9\n".encode("latin-1")), ("nul.yaml", b"pooling: a\x00b\n")):
        path = tmp_path / name
        path.write_bytes(data)
        result = cli("train", small_csv, "--config", path, *NO_MODEL)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and name in lines[0], result.output


@pytest.mark.parametrize("where", ["pooler_options", "freeze", "task_weights"])
def test_a_yaml_alias_bomb_is_refused_quickly(cli, small_csv, tmp_path, where):
    # nine levels of ten aliases each: a few hundred bytes that stand for 10**9 values
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text(f"{where}:\n  " + "\n  ".join(levels) + "\n", encoding="utf-8")
    result = cli("train", small_csv, "--config", path, *NO_MODEL)
    assert result.exit_code == 2 and where in result.output, result.output
