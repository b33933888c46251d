"""`mtl tune`: the search space (``space``), the objective (``objective``) and the study and its trials (``study``).

Only what the command's options need at import time lives here: the heavy modules load when it runs.
"""

PRUNERS = ("median", "hyperband", "none")  # Optuna's MedianPruner, HyperbandPruner, or no pruning
