"""Stage 2, the model: backbone -> pooler -> heads (``network``), built from a run's settings by
``builder``, scored per task by ``losses``, and saved and read back as a ``checkpoint``."""
