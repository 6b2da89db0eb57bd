-- Argo CD health for every mlcompute.io kind, from the status the operator writes:
-- observedGeneration, standard conditions (Ready, Stalled, Reconciling, Suspended), the job phase
-- (TrainingJob, BatchJob) and the Azure ML provisioningState (endpoints and deployments).
local hs = { status = "Progressing", message = "Waiting for the mlcompute operator" }
if obj.status == nil then
  return hs
end
local st = obj.status
local gen = obj.metadata.generation
if gen ~= nil and st.observedGeneration ~= nil and st.observedGeneration < gen then
  hs.message = "The operator has not yet seen generation " .. gen
  return hs
end
local function cond(t)
  if st.conditions ~= nil then
    for _, c in ipairs(st.conditions) do
      if c.type == t then
        return c
      end
    end
  end
  return nil
end
local function msg(default)
  return st.message or default
end
local stalled = cond("Stalled")
if stalled ~= nil and stalled.status == "True" then
  return { status = "Degraded", message = stalled.message or stalled.reason or "Stalled" }
end
local suspended = cond("Suspended")
if suspended ~= nil and suspended.status == "True" then
  return { status = "Suspended", message = suspended.message or "Suspended" }
end
-- Jobs: Azure ML phases.
if st.phase ~= nil then
  if st.phase == "Completed" then
    return { status = "Healthy", message = msg("Completed") }
  elseif st.phase == "Failed" then
    return { status = "Degraded", message = msg("Failed") }
  elseif st.phase == "Canceled" then
    return { status = "Suspended", message = msg("Canceled") }
  end
  return { status = "Progressing", message = st.phase .. ": " .. msg("") }
end
-- Endpoints and deployments: Azure ML provisioning state, then Ready.
local ps = st.provisioningState
if ps == "Failed" then
  return { status = "Degraded", message = msg("Provisioning failed") }
end
local ready = cond("Ready")
if ready ~= nil then
  if ready.status == "True" and (ps == nil or ps == "Succeeded") then
    return { status = "Healthy", message = ready.message or "Ready" }
  end
  local reconciling = cond("Reconciling")
  if ready.status == "False" and reconciling == nil and ps == "Succeeded" then
    return { status = "Degraded", message = ready.message or ready.reason or "Not ready" }
  end
  return { status = "Progressing", message = ready.message or ps or "Not ready yet" }
end
if ps == "Succeeded" then
  return { status = "Healthy", message = "Succeeded" }
end
if ps ~= nil then
  hs.message = ps
  return hs
end
-- Environments and InstanceTypes: valid once observed.
if st.observedGeneration ~= nil then
  return { status = "Healthy", message = "" }
end
return hs
