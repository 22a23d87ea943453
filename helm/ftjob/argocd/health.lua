-- Argo CD health check for FineTuneJob (ftjob.dev/v1alpha1).
-- Install it as `resource.customizations.health.ftjob.dev_FineTuneJob` in argocd-cm (docs/gitops.md).
-- Uses only Lua 5.1 base functions: Argo CD runs health checks from argocd-cm without the string and math
-- libraries (unless resource.customizations.useOpenLibs is set), and tests/gitops runs it that way.
--
--   Failed=True                      -> Degraded     (the condition's message)
--   Succeeded=True                   -> Healthy
--   Suspended=True                   -> Suspended
--   Admitted=False/Queued, Queued    -> Progressing  ("Queued: ...")
--   Running                          -> Progressing  ("Running, 42% done: ...")
--   anything else, or no status yet  -> Progressing
local hs = {}

local function condition(status, type_)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function text(value, fallback)
  if value ~= nil and value ~= "" then
    return value
  end
  return fallback
end

local status = obj.status
if status == nil or (status.phase == nil and status.conditions == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up this FineTuneJob."
  return hs
end

-- Terminal states first: they are final, whatever else the status says.
local failed = condition(status, "Failed")
if is_true(failed) then
  hs.status = "Degraded"
  hs.message = text(failed.message, text(status.message, text(failed.reason, "Failed")))
  return hs
end
local succeeded = condition(status, "Succeeded")
if is_true(succeeded) then
  hs.status = "Healthy"
  hs.message = text(succeeded.message, text(status.message, "Succeeded"))
  return hs
end

-- A status computed from an older generation (e.g. spec.suspend just changed) says nothing yet.
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) .. "."
  return hs
end

local suspended = condition(status, "Suspended")
if is_true(suspended) or status.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = text(status.message, text(suspended and suspended.message, "Suspended (spec.suspend is true)."))
  return hs
end

local admitted = condition(status, "Admitted")
if status.phase == "Queued" or (admitted ~= nil and admitted.status == "False" and admitted.reason == "Queued") then
  hs.status = "Progressing"
  hs.message = "Queued: " .. text(admitted and admitted.message, text(status.message, "waiting for Kueue to admit the Job."))
  return hs
end

local running = condition(status, "Running")
if is_true(running) or status.phase == "Running" then
  local detail = text(running and running.message, text(status.message, "Training."))
  local percent = status.progress and status.progress.percent
  hs.status = "Progressing"
  if percent ~= nil then
    hs.message = "Running, " .. tostring(percent) .. "% done: " .. detail
  else
    hs.message = "Running: " .. detail
  end
  return hs
end

hs.status = "Progressing"
hs.message = text(status.message, text(status.phase, "Pending"))
return hs
