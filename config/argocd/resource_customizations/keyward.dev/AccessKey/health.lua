-- Argo CD health of a Keyward AccessKey (keyward.dev/v1alpha1), from its
-- phase and Ready condition:
--   Active                       Healthy      the key is issued and verifies
--   Inactive                     Suspended    deactivated by spec.state; reactivating restores it
--   Expired, Revoked             Healthy      what the spec asks for (the message says it does not verify)
--   Pending                      Progressing  waiting for its Application or the tenant's switch
--   Pending with Stalled=True    Degraded     a Secret name conflict or an unusable field: fix the spec
--   Rejected                     Degraded     over a limit or beyond the Application's scopes
-- and Progressing while Keyward has not reconciled the latest generation.
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

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for Keyward to reconcile the key"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for Keyward to observe generation " .. obj.metadata.generation
  return hs
end

local phase = obj.status.phase
local ready = condition("Ready")
hs.message = phase
if ready ~= nil and ready.reason ~= nil then
  hs.message = ready.reason
  if ready.message ~= nil and ready.message ~= "" then
    hs.message = ready.reason .. ": " .. ready.message
  end
end

local stalled = condition("Stalled")
if phase == "Active" or phase == "Expired" or phase == "Revoked" then
  hs.status = "Healthy"
elseif phase == "Inactive" then
  hs.status = "Suspended"
elseif phase == "Rejected" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
return hs
