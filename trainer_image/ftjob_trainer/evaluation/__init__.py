"""Evaluation of the tuned model against the base model: losses, generation metrics, the report."""
