-- Argo CD health of a Keyward TenantSettings (keyward.dev/v1alpha1), from
-- its Ready condition:
--   Ready=True, Enabled            Healthy      API keys are switched on in the tenant
--   Ready=True, APIKeysDisabled    Suspended    switched off: no key is issued and none verifies
--   Ready=False, Stalled=True      Degraded     a value cannot be used (e.g. an unreadable duration)
--   no Ready yet, or an older generation    Progressing
local hs = {}

local function condition(t)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == t then
        return c
      end
    end
  end
  return nil
end

local ready = condition("Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for Keyward to reconcile the tenant's settings"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for Keyward to observe generation " .. obj.metadata.generation
  return hs
end

hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
elseif ready.status == "True" and ready.reason == "APIKeysDisabled" then
  hs.status = "Suspended"
elseif ready.status == "True" then
  hs.status = "Healthy"
else
  hs.status = "Progressing"
end
return hs
