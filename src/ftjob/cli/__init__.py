"""`ftjob`: the user CLI."""
