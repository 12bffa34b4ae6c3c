-- bundle.lua: renew an allowance bucket of a bundle, idempotent by the renewal id (RULES.md
-- "renew_bundle").
--
-- KEYS: 1 account hash, 2 idempotency hash of the hierarchy.
-- ARGV: 1 account id, 2 bundle id, 3 kind (seconds | octets | events), 4 units, 5 services
--       (comma-separated), 6 valid until, 7 rollover cap (units), 8 renewal id.
-- Returns: "<outcome> <replayed 0|1> <bucket id> <units applied>", then for invalid " <reason
--       naming the field>"; a replay answers what the renewal first applied.
-- Invariants: the bucket stays the same one (holds name it), its amount never below 0; the
--       account hash field 'B:<bundle id>' names its bucket; a refusal writes nothing.

local account_key, idempotency_key = KEYS[1], KEYS[2]
local account_id, bundle_id, kind = ARGV[1], ARGV[2], ARGV[3]
local units, cap = ARGV[4] + 0, ARGV[7] + 0

local account = load_account(account_key, account_id)
if account == nil then return 'unknown_account 0 0 0' end
local marker = 'w:' .. account_id .. ':' .. ARGV[8]
local previous = call('HGET', idempotency_key, marker)
if previous then return 'ok 1 ' .. previous end

local link = 'B:' .. bundle_id
local linked = account[link]
local bucket, amount = nil, units
if linked then
  local wanted = linked + 0
  for _, candidate in ipairs(account.buckets) do
    if candidate.id == wanted then bucket = candidate end
  end
end
if bucket ~= nil then
  if bucket.kind ~= kind then
    return 'invalid 0 0 0 kind: bundle ' .. bundle_id .. ' of account ' .. account_id .. ' holds ' .. bucket.kind
  end
  -- What it holds now rolls over up to the cap; units held by live reservations are not in it.
  local left = bucket.amount
  if left > cap then left = cap end
  amount = units + left
else
  bucket = new_bucket(account, kind, '0', ARGV[6], '0', ARGV[5])
end
bucket.amount, bucket.dirty = amount, true
local problem = save_checked(account, NO_ANCESTORS)
if problem ~= nil then return problem end
local meta = table.concat({kind, '0', ARGV[6], '0', ARGV[5]}, '|')
local applied = bucket.text .. ' ' .. fmt(amount)
call('HSET', account_key, 'm:' .. bucket.text, meta, link, bucket.text)
call('HSET', idempotency_key, marker, applied)
return 'ok 0 ' .. applied
