"""Exported model folders: a sentence-transformers folder or an ONNX graph, each with its task heads,
``labels.json``, ``mtl_config.json`` and a model card; loadable without mtl's checkpoints (and the
sentence-transformers one without mtl at all).

``export(run, kind, out)`` writes one; ``load(folder, device, precision)`` opens one for prediction.
"""

from __future__ import annotations

from pathlib import Path

from mtlcli.export import folder

FORMATS = folder.KINDS


QUANTIZE = ("int8",)  # what --quantize offers: ONNX Runtime's dynamic int8 (onnx_graph.quantize)


def export(run: str | Path, kind: str, out: str | Path, quantize: str | None = None) -> dict:
    """Write the run's best checkpoint to ``out`` as ``kind`` (an ONNX graph ``quantize``d to int8 if
    asked); returns what was written (for the report)."""
    from mtlcli.errors import UserError
    from mtlcli.inference.loaded_run import load_run

    if kind not in FORMATS:
        raise UserError(f"--format {kind}: use one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise UserError(f"--quantize {quantize}: use one of {', '.join(QUANTIZE)}")
    if quantize and kind != "onnx":
        raise UserError(f"--quantize {quantize}: only with --format onnx (a sentence-transformers folder is fp32)")
    out = Path(out)
    if kind == "onnx":  # fail before the slow part
        from mtlcli.extras import require

        require("onnx", "onnx", "--format onnx")
        require("onnxruntime", "onnx", "--format onnx")
    # fp32 whatever the run trained in; transformers' backbone and tokenizer, which save themselves
    loaded = load_run(run, device="cpu", precision="fp32", native=False)
    meta = folder.describe(loaded, kind, quantize)
    report = {"kind": kind, "out": out, "quantized": quantize}
    if kind == "sentence-transformers":
        from mtlcli.export import sentence_transformers

        sentence_transformers.check_exportable(loaded.saved.settings)
    with folder.staged(out) as tmp:
        if kind == "onnx":
            from mtlcli.export import onnx_graph

            report["max_abs_diff"] = onnx_graph.write(loaded, tmp)
            if quantize:
                report["max_abs_diff"] = onnx_graph.quantize(loaded, tmp)
        else:
            sentence_transformers.write(loaded, tmp)
        folder.write_json(tmp / folder.LABELS, loaded.label_sets)
        folder.write_json(tmp / folder.CONFIG, meta)
        dim = int(getattr(loaded.model.pooler, "output_size", loaded.model.backbone.config.hidden_size))
        from mtlcli.export.card import model_card

        (tmp / "README.md").write_text(model_card(meta, loaded.saved, out, dim), encoding="utf-8")
    return report


def load(path: Path, device: str = "auto", precision: str = "auto"):
    """An export folder opened for prediction: a LoadedRun (sentence-transformers) or an OnnxPredictor."""
    kind, saved = folder.read(path)
    if kind == "onnx":
        from mtlcli.errors import UserError
        from mtlcli.export.onnx_predictor import OnnxPredictor

        holds = folder.precision(path)  # fp32, or int8 where exported with --quantize int8
        if precision not in ("auto", "run", holds):
            raise UserError(f"--precision {precision}: this ONNX export runs in {holds} only"
                            + ("" if holds == "int8" else "; for int8 export it with --quantize int8"))
        return OnnxPredictor(path, saved, device, holds)
    from mtlcli.export import sentence_transformers

    return sentence_transformers.load(path, saved, device, precision)
