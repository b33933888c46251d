"""`mtl tune`: the search space (``space``), the objective (``objective``) and the study and its trials (``study``)."""
