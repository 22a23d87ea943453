"""FineTuneJob: the API model, the operator/trainer contract and the schema generator, shared by the operator,
the trainer and the `ftjob` command (`ftjob_cli`), and importing none of them."""

__version__ = "0.1.0"
