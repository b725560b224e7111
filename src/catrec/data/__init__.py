"""Data: raw formats to ``sequences.txt`` (``raw``), the leave-one-out tensors (``sequences``), batches."""
