-- Requests a rotation: a new value of the keyward.dev/rotate annotation
-- (the time, to the second). Keyward issues a new key ID and secret once per
-- new value and keeps the old key verifying for spec.rotation.gracePeriod;
-- re-applying the same value does nothing (status.rotation.lastRequest).
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["keyward.dev/rotate"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
