-- Argo CD health for every mlcompute.io kind, read from the status the operator writes by the kstatus
-- conventions (what Flux reads), so both tools agree: observedGeneration on every status write, and the
-- conditions Ready, Reconciling (True while working) and Stalled (True when it cannot go on without a
-- change), plus the job phase (TrainingJob, BatchJob). tests/health.rs runs this script as Argo CD does
-- (gopher-lua without the string library: no string methods here) on every kind in every state.
local function nonempty(s)
  return s ~= nil and s ~= ""
end
-- The first argument that is a non-empty string.
local function first(...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "string" and v ~= "" then
      return v
    end
  end
  return ""
end
-- Whether s starts with p (byte-wise comparison, as there is no string.sub here).
local function starts(s, p)
  return s >= p and s < p .. "\255"
end

if obj.status == nil then
  return { status = "Progressing", message = "Waiting for the mlcompute operator" }
end
local st = obj.status
local gen = obj.metadata.generation
local og = st.observedGeneration
if og == nil or (gen ~= nil and og < gen) then
  if og == nil or og == 0 then
    return { status = "Progressing", message = "Waiting for the mlcompute operator" }
  end
  return { status = "Progressing", message = "The operator has not yet seen generation " .. gen }
end

local function cond(t)
  if type(st.conditions) == "table" then
    for _, c in ipairs(st.conditions) do
      if c.type == t then
        return c
      end
    end
  end
  return nil
end
local function is_true(c)
  return c ~= nil and c.status == "True"
end
local ready = cond("Ready") or {}
local stalled = cond("Stalled") or {}
local kind = obj.kind

-- Jobs: the phase says whether it is finished. A finished job is done, whatever it did: a canceled
-- one is Healthy too (a Flux or Argo CD wait must not hang on it).
local phase = st.phase
if phase == "Completed" then
  return { status = "Healthy", message = first(st.message, ready.message, "Completed") }
elseif phase == "Canceled" then
  local m = first(st.message, ready.message)
  if m == "" then
    m = "Canceled"
  elseif not starts(m, "Canceled") then
    m = "Canceled: " .. m
  end
  return { status = "Healthy", message = m }
elseif phase == "Failed" then
  return {
    status = "Degraded",
    message = first(st.message, stalled.message, ready.message, stalled.reason, st.reason, "Failed"),
  }
end

-- Every kind: Reconciling or Stalled, whichever comes first (as kstatus reads them).
if type(st.conditions) == "table" then
  for _, c in ipairs(st.conditions) do
    if c.type == "Stalled" and c.status == "True" then
      return { status = "Degraded", message = first(c.message, st.message, c.reason, "Stalled") }
    end
    if c.type == "Reconciling" and c.status == "True" then
      local m = first(c.message, st.message, ready.message, c.reason, "Reconciling")
      if nonempty(phase) and not starts(m, phase) then
        m = phase .. ": " .. m
      end
      return { status = "Progressing", message = m }
    end
  end
end
local suspended = cond("Suspended")
if is_true(suspended) then
  return { status = "Suspended", message = first(suspended.message, "Suspended") }
end
-- A job that is not finished is on its way (queued, starting or running).
if nonempty(phase) then
  local m = first(st.message, ready.message)
  if m ~= "" then
    m = phase .. ": " .. m
  else
    m = phase
  end
  return { status = "Progressing", message = m }
end
-- Environments and InstanceTypes are definitions: once observed and not stalled they are what they
-- are (an InstanceType that no node matches says why in its Ready message, but waits on nothing).
if kind == "Environment" or kind == "InstanceType" then
  return { status = "Healthy", message = first(ready.message, ready.reason, "Observed") }
end
-- Endpoints and deployments: Ready.
if ready.status == "True" then
  return { status = "Healthy", message = first(ready.message, "Ready") }
elseif ready.status ~= nil then
  return { status = "Progressing", message = first(ready.message, ready.reason, "Not ready yet") }
end
return { status = "Healthy", message = "" }
