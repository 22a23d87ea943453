"""The trainer: chat JSONL in; validated data, a (Q)LoRA adapter, an evaluation and a manifest out.

Heavy libraries (torch, transformers) are imported inside the functions that need them, so the CLI's
`--help` and configuration checks are instant.
"""
