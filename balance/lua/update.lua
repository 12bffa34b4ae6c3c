-- update.lua: change an account's status, credit limit or child cap (RULES.md "update").
--
-- KEYS: 1 account hash.
-- ARGV: 1 status, 2 credit limit micros, 3 child cap micros; '' leaves a field unchanged.
-- Returns: "<outcome>" (ok | unknown_account).
-- Invariants: none can break: a lowered limit or cap only stops new grants (RULES.md 3 and 4).

if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_account' end
local fields = {}
for index, name in ipairs({'st', 'lim', 'cap'}) do
  if ARGV[index] ~= '' then
    fields[#fields + 1] = name
    fields[#fields + 1] = ARGV[index]
  end
end
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
return 'ok'
