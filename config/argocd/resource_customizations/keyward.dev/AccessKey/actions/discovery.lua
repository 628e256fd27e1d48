-- The rotate action ("refresh key"), offered on keys that hold key material
-- to rotate: Active, Inactive and Expired ones. Pending and Rejected keys
-- have none yet, a Revoked key's is destroyed.
local actions = {}
local phase = nil
if obj.status ~= nil then
  phase = obj.status.phase
end
actions["rotate"] = {
  ["disabled"] = not (phase == "Active" or phase == "Inactive" or phase == "Expired"),
  ["iconClass"] = "fa fa-fw fa-rotate",
  ["displayName"] = "Rotate key",
}
return actions
