"""A trained run put to use: rebuilt from its folder alone and run on texts in bounded batches
(``loaded_run``), with texts read and predictions written chunk by chunk (``predict_io``)."""
