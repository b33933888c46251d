"""The token cache: a second run on the same texts, tokenizer and max length reads the token ids
instead of tokenizing, trains exactly as the first, and anything that changes the ids misses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import sample_rows, write_csv
from mtlcli.data import token_cache
from mtlcli.data.batching import choose_max_length, tokenize
from mtlcli.data.token_cache import TokenCache, read_entry, tokenizer_fingerprint, trim, write_entry
from mtlcli.model.network import load_tokenizer

TEXTS = [row[0] for row in sample_rows(80)]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(tiny_model)


def cached(folder: Path, tokenizer, texts=TEXTS, max_length: int = 32) -> tuple[TokenCache, np.ndarray, np.ndarray]:
    """One lookup through a fresh cache object (a new run), saved as the main process saves it."""
    cache = TokenCache(folder, tokenizer)
    ids, lengths = cache.tokenize(texts, max_length)
    assert cache.save() is None
    return cache, ids, lengths


def test_a_second_lookup_reads_the_ids_the_first_tokenized(tmp_path, tokenizer):
    first, ids, lengths = cached(tmp_path, tokenizer)
    assert (first.texts_tokenized, first.texts_cached) == (len(TEXTS), 0)
    (entry,) = tmp_path.glob("tokens-*.npz")
    second, ids2, lengths2 = cached(tmp_path, tokenizer)
    assert (second.texts_tokenized, second.texts_cached) == (0, len(TEXTS))
    want_ids, want_lengths = tokenize(tokenizer, TEXTS, 32)
    for got in ((ids, lengths), (ids2, lengths2)):
        assert got[0].dtype == want_ids.dtype and got[1].dtype == want_lengths.dtype
        assert np.array_equal(got[0], want_ids) and np.array_equal(got[1], want_lengths)
    assert list(tmp_path.iterdir()) == [entry]  # a hit writes nothing


def test_other_texts_another_max_length_or_another_tokenizer_miss(tmp_path, tokenizer, tiny_model):
    cached(tmp_path, tokenizer)
    changed = [TEXTS[0] + " again", *TEXTS[1:]]
    assert cached(tmp_path, tokenizer, changed)[0].texts_cached == 0  # a changed file, or another text column
    assert cached(tmp_path, tokenizer, TEXTS[:40])[0].texts_cached == 0  # other rows (another validation split)
    assert cached(tmp_path, tokenizer, max_length=16)[0].texts_cached == 0
    # the same tokenizer files in another folder: the same fingerprint, a hit
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    assert tokenizer_fingerprint(load_tokenizer(str(copy))) == tokenizer_fingerprint(tokenizer)
    assert cached(tmp_path, load_tokenizer(str(copy)))[0].texts_cached == len(TEXTS)
    # one word more in the vocabulary: other ids, a miss
    vocab = copy / "vocab.txt"
    vocab.write_text(vocab.read_text(encoding="utf-8") + "zzzz\n", encoding="utf-8")
    (copy / "tokenizer.json").unlink()  # rebuilt from vocab.txt
    other = load_tokenizer(str(copy))
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)
    assert cached(tmp_path, other)[0].texts_cached == 0
    assert len(list(tmp_path.glob("tokens-*.npz"))) == 5


def test_a_tokenizer_call_does_not_change_its_fingerprint(tokenizer):
    before = tokenizer_fingerprint(tokenizer)
    tokenizer(TEXTS[:3], truncation=True, max_length=7, padding="max_length")  # sets truncation and padding
    assert tokenizer_fingerprint(tokenizer) == before


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "wrong arrays"])
def test_a_damaged_entry_is_a_miss_and_is_written_again(tmp_path, tokenizer, damage):
    _, ids, lengths = cached(tmp_path, tokenizer)
    (entry,) = tmp_path.glob("tokens-*.npz")
    whole = entry.read_bytes()
    if damage == "truncated":
        entry.write_bytes(whole[: len(whole) // 2])
    elif damage == "garbage":
        entry.write_bytes(b"\x93NUMPY not really" * 10)
    elif damage == "empty":
        entry.write_bytes(b"")
    else:  # readable, but not what this key holds: lengths that do not add up
        write_entry(entry, {"ids": ids[:-1], "lengths": lengths})
    again, ids2, lengths2 = cached(tmp_path, tokenizer)
    assert again.texts_tokenized == len(TEXTS)
    assert np.array_equal(ids2, ids) and np.array_equal(lengths2, lengths)
    assert entry.read_bytes() == whole  # rewritten whole
    assert cached(tmp_path, tokenizer)[0].texts_cached == len(TEXTS)


def test_auto_max_length_is_kept_by_texts_limit_and_seed(tmp_path, tokenizer):
    first = TokenCache(tmp_path, tokenizer)
    chosen = first.auto_max_length(TEXTS, 64, 42)
    assert chosen == choose_max_length(tokenizer, TEXTS, 64, 42)
    first.save()
    (entry,) = tmp_path.glob("auto-*.npz")
    assert int(read_entry(entry)["max_length"]) == chosen
    write_entry(entry, {"max_length": np.int64(chosen + 8)})  # what a hit returns is what the entry holds
    assert TokenCache(tmp_path, tokenizer).auto_max_length(TEXTS, 64, 42) == chosen + 8
    for texts, limit, seed in ((TEXTS[:50], 64, 42), (TEXTS, 32, 42), (TEXTS, 64, 7)):
        other = TokenCache(tmp_path, tokenizer)
        assert other.auto_max_length(texts, limit, seed) == choose_max_length(tokenizer, texts, limit, seed)
        assert other.pending  # a miss: written on save
    assert not TokenCache(None, tokenizer).pending


def test_trim_keeps_the_most_recently_used_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(token_cache, "MAX_ENTRIES", 3)
    now = time.time()
    for n in range(5):
        write_entry(tmp_path / f"tokens-{n}.npz", {"ids": np.arange(10, dtype=np.int32)})
        os.utime(tmp_path / f"tokens-{n}.npz", (now - 100 + n, now - 100 + n))
    os.utime(tmp_path / "tokens-0.npz", (now, now))  # just read by a run
    stale, fresh = tmp_path / ".tokens-9.npz.tmp-1", tmp_path / ".tokens-8.npz.tmp-2"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (now - 2 * token_cache.STALE_TMP_S,) * 2)
    trim(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, "tokens-0.npz", "tokens-3.npz", "tokens-4.npz"]
    monkeypatch.setattr(token_cache, "MAX_BYTES", (tmp_path / "tokens-0.npz").stat().st_size + 1)
    trim(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["tokens-0.npz"]  # the newest stays


WRITER = """
import sys
from pathlib import Path
import numpy as np
from mtlcli.data.token_cache import write_entry
path = Path(sys.argv[1])
arrays = {"ids": np.arange(300_000, dtype=np.int32), "lengths": np.full(1000, 300, dtype=np.int64)}
for _ in range(40):
    write_entry(path, arrays)
"""


@pytest.mark.slow
def test_processes_writing_the_same_entry_at_once_leave_a_whole_one(tmp_path):
    entry = tmp_path / "tokens-same.npz"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(entry)], env=env, stderr=subprocess.PIPE)
               for _ in range(3)]
    reads = 0
    while any(w.poll() is None for w in writers):
        if entry.exists():  # once it exists, every read sees a whole entry: the old one or the new one
            got = read_entry(entry)
            assert got is not None and len(got["ids"]) == 300_000 and int(got["lengths"].sum()) == 300_000
            reads += 1
    for w in writers:
        assert w.wait() == 0, w.stderr.read().decode()
    assert reads and read_entry(entry) is not None
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]  # no temporary file left


# ---- through `mtl train` ------------------------------------------------------------------------


def loud(train_args: list[str]) -> list[str]:
    """The tiny model's training flags without --quiet: the first lines say where the tokens came from."""
    return [a for a in train_args if a != "--quiet"]


def numbers(run: Path) -> list[dict]:
    """metrics.jsonl without the timings: what training computed."""
    timing = ("seconds", "train_seconds", "train_sentences_per_s")
    return [{k: v for k, v in row.items() if k not in timing}
            for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.slow
def test_a_second_run_reads_the_tokens_and_trains_the_same(cli, tmp_path, train_args):
    data = write_csv(tmp_path / "data.csv", sample_rows(120))
    args = loud(train_args)
    first = cli("train", data, *args, "--name", "first")
    assert first.exit_code == 0, first.output
    assert "Tokenized 120 texts in " in first.output and "kept in runs/.cache/tokens" in first.output
    second = cli("train", data, *args, "--name", "second")
    assert second.exit_code == 0, second.output
    assert "Tokens from the cache (120 texts, " in second.output
    off = cli("train", data, *args, "--name", "off", "--no-token-cache")
    assert off.exit_code == 0, off.output
    assert "Tokenized 120 texts in " in off.output and "(--no-token-cache: not kept)" in off.output
    runs = Path("runs")
    assert numbers(runs / "first") == numbers(runs / "second") == numbers(runs / "off")
    assert len(numbers(runs / "first")) == 2
    # the cache is no run: nothing that lists runs sees it
    from mtlcli.runs import run_folders

    assert [p.name for p in run_folders(runs)] == ["first", "off", "second"]
    # another max length, or a changed file, tokenizes again
    shorter = cli("train", data, *args, "--name", "shorter", "--max-length", "8", "--max-steps", "1")
    assert "Tokenized 120 texts" in shorter.output, shorter.output
    changed = write_csv(tmp_path / "data.csv", [["Changed " + sample_rows(1)[0][0], *sample_rows(1)[0][1:]],
                                                *sample_rows(120)[1:]])
    again = cli("train", changed, *args, "--name", "changed", "--max-steps", "1")
    assert "Tokens from the cache (" not in again.output and "tokenized" in again.output.lower(), again.output


@pytest.mark.slow
def test_a_resumed_run_reads_the_tokens_and_may_turn_the_cache_off(cli, small_csv, train_args):
    args = loud(train_args)
    assert cli("train", small_csv, *args, "--max-steps", "2", "--name", "part").exit_code == 0
    resumed = cli("train", "--resume", "runs/part", "--max-steps", "4")
    assert resumed.exit_code == 0, resumed.output
    assert "Tokens from the cache (120 texts, " in resumed.output
    off = cli("train", "--resume", "runs/part", "--max-steps", "6", "--no-token-cache")
    assert off.exit_code == 0, off.output
    assert "(--no-token-cache: not kept)" in off.output


@pytest.mark.slow
def test_tidy_clears_the_token_cache(cli, small_csv, train_args):
    assert cli("train", small_csv, *train_args, "--max-steps", "1").exit_code == 0
    folder = Path("runs/.cache/tokens")
    size = sum(p.stat().st_size for p in folder.iterdir())
    listed = cli("tidy", "runs", "--token-cache", "--dry-run")
    assert listed.exit_code == 0, listed.output
    assert f"{folder.resolve()}: {size / 1e6:.1f} MB (3 entries)" in listed.output
    assert len(list(folder.iterdir())) == 3
    tidied = cli("tidy", "runs", "--token-cache")
    assert tidied.exit_code == 0, tidied.output
    assert not folder.exists() and Path("runs/latest").is_dir()


@pytest.mark.slow
def test_runs_with_two_processes_write_one_cache_and_read_it(tmp_path, train_args):
    data = write_csv(tmp_path / "data.csv", sample_rows(120))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    shown = []
    for name in ("first", "second"):
        done = subprocess.run([sys.executable, "-m", "mtlcli", "train", str(data), *loud(train_args), "--nproc", "2",
                               "--out", str(tmp_path / "runs"), "--name", name], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        shown.append(done.stdout + done.stderr)
    assert "Tokenized 120 texts" in shown[0] and "Tokens from the cache (120 texts" in shown[1], shown
    assert numbers(tmp_path / "runs" / "first") == numbers(tmp_path / "runs" / "second")
    entries = sorted((tmp_path / "runs" / ".cache" / "tokens").iterdir())
    assert [p.name.split("-")[0] for p in entries] == ["auto", "tokens", "tokens"]  # one writer: no temporary file
