-- provision.lua: create an account with its buckets (RULES.md "provision").
--
-- KEYS: 1 account hash, 2 parent account hash (the account's own key again when it has no parent),
--       3 the parent's children set (the account's own children set when it has no parent).
-- ARGV: 1 account id, 2 currency, 3 payment type, 4 status, 5 credit limit micros, 6 the
--       ancestors' ids, parent first, root last, separated by spaces ('' for none), 7 child cap micros, 8 bucket count, then per bucket 7 fields: id, kind,
--       amount, services (comma-separated), valid from, valid until, priority.
-- Returns: "<outcome>" (ok | already_exists | invalid); with ok, a child is in its parent's
--       children set (RULES.md "descendants").
-- Invariants: credits = the sum of the monetary buckets; a parent exists, has the same currency
--       and the parent the store knows for it (the next id in ARGV[6], none for the root); the
--       tree stays within MAX_LEVELS (lib.lua); bucket ids are unique and >= 1.

local account_key, parent_key = KEYS[1], KEYS[2]
local account_id, currency, payment, status = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit, ancestor_ids, cap, count = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local parent_id = parent_of(ancestor_ids)

if redis.call('EXISTS', account_key) == 1 then return 'already_exists' end
if parent_id ~= '' then
  local parent = redis.call('HMGET', parent_key, 'cur', 'par')
  local grandparent_id = parent_of(sub(ancestor_ids, #parent_id + 2))
  if parent[1] == false or parent[1] ~= currency or (parent[2] or '') ~= grandparent_id then return 'invalid' end
  local levels = 2 -- the account and its parent
  for _ in gmatch(ancestor_ids, ' ') do levels = levels + 1 end
  if levels > MAX_LEVELS then return 'invalid' end
end

local fields = {'cur', currency, 'pay', payment, 'st', status}
if (tonumber(limit) or 0) ~= 0 then fields[#fields + 1] = 'lim'; fields[#fields + 1] = limit end
if parent_id ~= '' then
  fields[#fields + 1] = 'par'; fields[#fields + 1] = parent_id
  if (tonumber(cap) or 0) ~= 0 then fields[#fields + 1] = 'cap'; fields[#fields + 1] = cap end
end
local credits, seen = 0, {}
for i = 0, count - 1 do
  local base = 9 + i * 7
  local bucket_id, kind, amount = tonumber(ARGV[base]), ARGV[base + 1], tonumber(ARGV[base + 2])
  if bucket_id == nil or bucket_id < 1 or seen[bucket_id] or amount == nil or amount < 0 then return 'invalid' end
  seen[bucket_id] = true
  if kind == 'main' or kind == 'bonus' then credits = credits + amount end
  fields[#fields + 1] = 'q:' .. bucket_id
  fields[#fields + 1] = fmt(amount)
  fields[#fields + 1] = 'm:' .. bucket_id
  fields[#fields + 1] = table.concat({kind, ARGV[base + 4], ARGV[base + 5], ARGV[base + 6], ARGV[base + 3]}, '|')
end
if credits ~= 0 then fields[#fields + 1] = 'cr'; fields[#fields + 1] = fmt(credits) end
redis.call('HSET', account_key, unpack(fields))
if parent_id ~= '' then redis.call('SADD', KEYS[3], account_id) end
return 'ok'
