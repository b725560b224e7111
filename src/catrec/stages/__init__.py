"""The pipeline stages the CLI calls: each reads its inputs, runs the pure algorithms, writes its outputs.

``pretrain``, ``finetune``, ``attack`` and ``cascade``; ``common`` holds what they share (settings, metrics
files). Data preparation (download, preprocess) lives in ``catrec.download`` and ``catrec.data.preprocess``.
"""
