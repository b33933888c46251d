"""Training a BERT without transformers: mtlcli.model.bert builds the pretrained backbone from its
folder and data.tokenizer_file reads its tokenizer, and the run is the one transformers' classes
give, to the bit. Models the module does not cover still load through transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import assert_same_run
from mtlcli.model import bert
from mtlcli.model.network import load_pretrained_backbone, load_tokenizer


def test_the_native_backbone_holds_the_weights_transformers_loads(tiny_model):
    torch.manual_seed(0)
    reference = load_pretrained_backbone(tiny_model, 0.25)
    after_reference = torch.rand(3)
    torch.manual_seed(0)
    native = load_pretrained_backbone(tiny_model, 0.25, native=True)
    assert isinstance(native, bert.BertEncoder) and not isinstance(reference, bert.BertEncoder)
    assert torch.equal(torch.rand(3), after_reference)  # loading draws no random numbers, as transformers' does not
    assert not native.training and not reference.training
    theirs, ours = reference.state_dict(), native.state_dict()
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)
    assert native.config.attention_probs_dropout_prob == reference.config.attention_probs_dropout_prob == 0.25
    assert native.encoder.layer[0].attention.self.dropout.p == 0.25


def test_training_with_the_native_bert_gives_transformers_run_to_the_bit(cli, small_csv, train_args, tmp_path,
                                                                          monkeypatch):
    # attention dropout on, so the attention's own random draws are compared too
    args = [small_csv, *train_args, "--epochs", "1", "--attention-dropout", "0.1", "--seed", "3"]
    assert cli("train", *args, "--name", "native").exit_code == 0
    monkeypatch.setattr(bert, "pretrained_encoder", lambda folder, overrides: None)  # as for an uncovered model
    assert cli("train", *args, "--name", "transformers").exit_code == 0
    runs = {name: tmp_path / "runs" / name for name in ("native", "transformers")}
    assert_same_run(runs["native"], runs["transformers"])
    # the run folder's backbone files: transformers reads the native run's as its own
    from transformers import AutoConfig

    saved = {name: AutoConfig.from_pretrained(str(run / "backbone")).to_dict() for name, run in runs.items()}
    for key in ("hidden_size", "num_hidden_layers", "vocab_size", "attention_probs_dropout_prob", "model_type"):
        assert saved["native"][key] == saved["transformers"][key], key
    ids = {name: load_tokenizer(str(run / "backbone"))(["a great phone"])["input_ids"] for name, run in runs.items()}
    assert ids["native"] == ids["transformers"]


def weights_file(folder: Path, tiny_model: str, change) -> Path:
    """A copy of the tiny model whose model.safetensors went through ``change``."""
    from safetensors.torch import load_file, save_file

    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (folder / name).write_bytes((Path(tiny_model) / name).read_bytes())
    save_file(change(load_file(str(Path(tiny_model) / bert.WEIGHTS))), str(folder / bert.WEIGHTS))
    return folder


@pytest.mark.parametrize("change", [
    lambda w: {f"bert.{k}": v for k, v in w.items()},  # BertForMaskedLM's names: transformers maps them
    lambda w: {k: v.half() for k, v in w.items()},  # fp16 weights
    lambda w: {k: v for k, v in w.items() if "pooler" not in k},  # a weight missing
])
def test_weights_the_native_backbone_does_not_cover_go_to_transformers(tiny_model, tmp_path, change):
    folder = weights_file(tmp_path, tiny_model, change)
    assert bert.pretrained_encoder(folder, {}) is None
    assert not isinstance(load_pretrained_backbone(str(folder), native=True), bert.BertEncoder)


def test_checkpoint_buffers_beside_the_weights_are_dropped(tiny_model, tmp_path):
    folder = weights_file(tmp_path, tiny_model, lambda w: {**w, "embeddings.position_ids": torch.arange(256)[None]})
    assert isinstance(bert.pretrained_encoder(folder, {}), bert.BertEncoder)
