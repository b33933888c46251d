"""Scoring a model on labelled rows: the metrics (``metrics``), the evaluation pass that validation
and ``mtl eval`` share (``evaluation``), a run's scores as plain JSON-ready data (``scores``) and the
check that each task learned more than a constant answer (``quality``)."""
