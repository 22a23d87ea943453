"""FineTuneJob: the API model, the schema generator and the user CLI shared by the operator and trainer."""

__version__ = "0.1.0"
