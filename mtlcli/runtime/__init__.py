"""Where the model runs: device and precision choice (``hardware``), giving freed memory back to the
system (``heap``) and CUDA graphs that record a step once and replay it (``cuda_graphs``)."""
