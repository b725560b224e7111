"""catrec: Cascade-guided Adversarial Training for sequential recommendation (Tan et al.), reproduced."""

__version__ = "0.1.0"
