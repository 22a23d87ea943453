"""The operator's RBAC contract, written out once: docs/multi-tenant.md shows the same table
(tests/gitops/test_docs.py compares them), and tests/helm/test_rbac.py has the real API server judge the
chart's ServiceAccount against it: the server's own SelfSubjectRulesReview must list exactly this, real
requests succeed or get 403, and the operator runs as that account without a single denial."""

from __future__ import annotations

from typing import Final

from .rendering import JsonDict

Permission = tuple[str, str, str]
"""(API group, resource[/subresource], verb)."""

EXPECTED: Final[frozenset[Permission]] = frozenset(
    {
        ("ftjob.dev", "finetunejobs", "get"),
        ("ftjob.dev", "finetunejobs", "list"),
        ("ftjob.dev", "finetunejobs", "watch"),
        ("ftjob.dev", "finetunejobs/status", "patch"),
        ("ftjob.dev", "finetunejobs/finalizers", "update"),
        ("ftjob.dev", "finetunejobpolicies", "get"),
        ("ftjob.dev", "finetunejobpolicies/status", "patch"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "list"),
        ("batch", "jobs", "watch"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "patch"),
        ("batch", "jobs", "delete"),
        ("", "services", "create"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods/log", "get"),
        ("", "events", "create"),
    }
)


def expand(rules: list[JsonDict]) -> set[Permission]:
    """Every (group, resource, verb) a list of PolicyRules / ResourceRules allows (resourceNames ignored)."""
    out: set[Permission] = set()
    for rule in rules:
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    out.add((group, resource, verb))
    return out
