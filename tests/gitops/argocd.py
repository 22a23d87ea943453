"""Run the chart's Argo CD health check the way Argo CD does: gopher-lua is Lua 5.1, and a health script from
argocd-cm runs without the string, math, io and debug libraries; the object arrives as a global `obj`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from lupa import lua51

ROOT: Final = Path(__file__).resolve().parents[2]
HEALTH_LUA: Final = ROOT / "helm" / "ftjob" / "argocd" / "health.lua"
ARGO_HEALTH_STATUSES: Final = frozenset(
    {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
)

# Argo CD opens package, base and table, and a reduced os (util/lua/lua.go, VM.runLua, UseOpenLibs false).
_SANDBOX: Final = "string = nil; math = nil; io = nil; debug = nil; os = nil; coroutine = nil"


def to_lua(runtime: Any, value: Any) -> Any:
    """JSON -> Lua as Argo CD decodes it: objects and arrays become tables (arrays 1-based), numbers doubles."""
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    raise TypeError(f"not JSON: {value!r}")


def health(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """The health status and message the script returns for `obj`."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=False, register_eval=False)
    runtime.execute(_SANDBOX)
    runtime.globals().obj = to_lua(runtime, obj)
    result = runtime.execute(script if script is not None else HEALTH_LUA.read_text())
    assert result is not None, "the script returned nothing"
    out = {str(k): v for k, v in dict(result).items()}
    assert set(out) <= {"status", "message"}, out
    assert out["status"] in ARGO_HEALTH_STATUSES, out
    assert isinstance(out.get("message", ""), str), out
    return {"status": out["status"], "message": out.get("message", "")}
