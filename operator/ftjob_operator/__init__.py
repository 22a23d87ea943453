"""The kopf operator that reconciles FineTuneJobs into GPU Jobs and back into status."""
