"""Generators: the FineTuneJob model -> CRD, Helm CRD template, API reference."""
