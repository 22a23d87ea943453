"""Pod Security Standards, `restricted` profile (Kubernetes 1.31), as a pure check of a pod spec.

`restricted_violations` follows the controls of
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline plus restricted), the ones
the `pod-security.kubernetes.io/enforce: restricted` admission label enforces. `hardening_violations` adds
what this project asks on top: a read-only root filesystem, resources and a liveness probe.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

JsonDict = dict[str, Any]

RESTRICTED_VOLUME_TYPES: Final = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
RESTRICTED_ADDABLE_CAPABILITIES: Final = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS: Final = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
ALLOWED_SELINUX_TYPES: Final = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
_NAMESPACE_SHARING: Final = ("hostNetwork", "hostPID", "hostIPC")


def containers(pod: JsonDict) -> Iterator[tuple[str, JsonDict]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(field) or []:
            yield f"{field}[{container.get('name', '?')}]", container


def restricted_violations(pod: JsonDict) -> list[str]:
    """Every control of the `restricted` profile that `pod` (a PodSpec) breaks; [] when it complies."""
    out: list[str] = []
    pod_sc: JsonDict = pod.get("securityContext") or {}

    # --- baseline -----------------------------------------------------------------------------------
    for field in _NAMESPACE_SHARING:
        if pod.get(field):
            out.append(f"{field} is true")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("securityContext.windowsOptions.hostProcess is true")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"unsafe sysctl {sysctl.get('name')}")
    out.extend(_selinux("securityContext", pod_sc))
    out.extend(_apparmor("securityContext", pod_sc))
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("securityContext.seccompProfile.type is Unconfined")

    # --- restricted: volumes ------------------------------------------------------------------------
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            out.append(f"volume {volume.get('name')} has type {sorted(kinds - RESTRICTED_VOLUME_TYPES)}")

    pod_non_root = pod_sc.get("runAsNonRoot") is True
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    if pod_sc.get("runAsUser") == 0:
        out.append("securityContext.runAsUser is 0")

    for where, container in containers(pod):
        sc: JsonDict = container.get("securityContext") or {}
        # baseline
        if sc.get("privileged"):
            out.append(f"{where}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}: windowsOptions.hostProcess is true")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{where}: hostPort {port['hostPort']}")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{where}: procMount {sc['procMount']}")
        out.extend(_selinux(where, sc))
        out.extend(_apparmor(where, sc))
        # restricted
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot") is False or not (pod_non_root or sc.get("runAsNonRoot") is True):
            out.append(f"{where}: runAsNonRoot is not true (on the pod or the container)")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp == "Unconfined" or not (pod_seccomp or seccomp in ("RuntimeDefault", "Localhost")):
            out.append(f"{where}: seccompProfile is not RuntimeDefault or Localhost")
        caps: JsonDict = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}: capabilities.drop does not include ALL")
        added = set(caps.get("add") or []) - RESTRICTED_ADDABLE_CAPABILITIES
        if added:
            out.append(f"{where}: adds capabilities {sorted(added)}")
    return out


def hardening_violations(pod: JsonDict, *, need_liveness_probe: bool = True) -> list[str]:
    """What this project asks beyond `restricted`: read-only root, requests and limits, a liveness probe."""
    out: list[str] = []
    for where, container in containers(pod):
        if where.startswith("ephemeralContainers"):
            continue
        sc: JsonDict = container.get("securityContext") or {}
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{where}: readOnlyRootFilesystem is not true")
        resources: JsonDict = container.get("resources") or {}
        for part in ("requests", "limits"):
            if not (resources.get(part) or {}).get("memory"):
                out.append(f"{where}: no resources.{part}.memory")
        if not (resources.get("requests") or {}).get("cpu"):
            out.append(f"{where}: no resources.requests.cpu")
        if need_liveness_probe and where.startswith("containers") and not container.get("livenessProbe"):
            out.append(f"{where}: no livenessProbe")
    return out


def _selinux(where: str, sc: JsonDict) -> list[str]:
    options: JsonDict = sc.get("seLinuxOptions") or {}
    out = []
    if options.get("type", "") not in ALLOWED_SELINUX_TYPES:
        out.append(f"{where}: seLinuxOptions.type {options['type']}")
    for field in ("user", "role"):
        if options.get(field):
            out.append(f"{where}: seLinuxOptions.{field} is set")
    return out


def _apparmor(where: str, sc: JsonDict) -> list[str]:
    profile = (sc.get("appArmorProfile") or {}).get("type")
    if profile is not None and profile not in ("RuntimeDefault", "Localhost"):
        return [f"{where}: appArmorProfile.type {profile}"]
    return []
