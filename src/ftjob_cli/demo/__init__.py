"""The README's first command: a real fine-tuning run on an embedded S3 server and a small real model."""
