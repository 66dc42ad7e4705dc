"""Flax linen modules of the tokenizer."""
