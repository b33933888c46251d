"""Stage 1, data: a table file in, checked examples and token batches out.

``rows`` reads every input format (CSV, TSV, JSON Lines, Parquet) with one set of checks;
``tables`` turns rows into label sets, label ids and the validation split; ``batching`` tokenizes
once and groups texts of similar length into batches. Nothing here loads a model.
"""
