"""Shared fixtures live in tests/support/ and are registered here."""

pytest_plugins = ["tests.support.s3_server", "tests.support.models", "tests.support.kube_fixtures"]
