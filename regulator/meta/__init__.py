"""Meta-learning: a hardware-aware prior and few-shot adaptation from it."""
