-- Argo CD health of a Keyward Application (keyward.dev/v1alpha1), from its
-- Ready condition:
--   Ready=True                              Healthy      its keys can be issued and verify
--   Ready=False, APIKeysDisabled            Suspended    the tenant's TenantSettings switches API keys off
--   Ready=False, Stalled=True               Degraded     the tenant's TenantSettings is invalid
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
  hs.message = "Waiting for Keyward to reconcile the application"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for Keyward to observe generation " .. obj.metadata.generation
  return hs
end

hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
local stalled = condition("Stalled")
if ready.status == "True" then
  hs.status = "Healthy"
elseif stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
elseif ready.reason == "APIKeysDisabled" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
return hs
