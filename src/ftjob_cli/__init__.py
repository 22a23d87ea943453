"""`ftjob`, the user's command, and what stands on both images' code: `ftjob local` (the pod the operator
renders, run as a local process with the trainer), `ftjob data check` (the trainer's data gate) and the
README's demo. The layer above the operator and the trainer; the shared `ftjob` package below them holds
the API, the contract and the schema, and imports none of the three."""
