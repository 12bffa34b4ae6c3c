-- credit.lua: top-up, adjustment, prepaid rental or new bucket, idempotent by its id (RULES.md
-- "top_up", "adjust", "debit_rental", "add_bucket").
--
-- KEYS: 1 account hash, 2 idempotency hash of the hierarchy.
-- ARGV: 1 account id, 2 operation (top_up | adjust | rental | add_bucket), 3 idempotency id (may be ''
--       for add_bucket: then none is kept), 4 signed amount (micros, or units for an allowance bucket), 5 bucket kind,
--       6 services (comma-separated), 7 valid from, 8 valid until, 9 priority, 10 a rental's policy
--       (restrict | allow_negative; absent otherwise).
-- Returns: "<outcome> <replayed 0|1> <bucket id>", then for top_up and adjust " <amount applied>":
--       on a replay the amount first applied (absent for ids recorded before it was kept).
-- Invariants: credits - debits = money in buckets + held, checked before writing; a negative
--       adjustment never takes its bucket below 0, a rental only with allow_negative and by at
--       most its amount (the account's main floor 'fl'); a repeated id changes nothing.

local account_key, idempotency_key = KEYS[1], KEYS[2]
local account_id, operation, operation_id = ARGV[1], ARGV[2], ARGV[3]
local amount, kind = tonumber(ARGV[4]), ARGV[5]

local account = load_account(account_key, account_id)
if account == nil then return 'unknown_account 0 0' end
local marker = nil
local prefixes = {top_up = 't:', adjust = 'j:', add_bucket = 'b:', rental = 'n:'}
if operation ~= 'add_bucket' or operation_id ~= '' then
  marker = (prefixes[operation] or 'j:') .. account_id .. ':' .. operation_id
  local previous = redis.call('HGET', idempotency_key, marker) -- "<bucket id> <amount>"
  if previous then return 'ok 1 ' .. previous end
end
-- RULES.md "top_up", "debit_rental": a terminated account takes no more money and pays no rental.
if (operation == 'top_up' or operation == 'rental') and account.st == 'terminated' then return 'account_blocked 0 0' end
-- RULES.md "debit_rental": allow_negative takes the bucket down to minus the rental, from 0 or more.
local negative = operation == 'rental' and ARGV[10] == 'allow_negative'

local bucket, meta = nil, nil
if operation ~= 'add_bucket' then bucket = first_of_kind(account, kind) end
if bucket == nil then
  if amount < 0 and not negative then return 'insufficient_funds 0 0' end
  bucket, meta = new_bucket(account, kind, ARGV[7], ARGV[8], ARGV[9], ARGV[6])
end
local floor = nil
if negative then
  if bucket.amount < 0 then return 'insufficient_funds 0 0' end
  if bucket.amount + amount < 0 then floor = -amount end
elseif amount < 0 and bucket.amount + amount < 0 then
  -- A credit into a main bucket a rental took below 0 pays that debt down, whatever it leaves.
  return 'insufficient_funds 0 0'
end
if floor ~= nil then account.fl = floor end
bucket.amount, bucket.dirty = bucket.amount + amount, true
if kind == 'main' or kind == 'bonus' then account.cr, account.dirty_cr = account.cr + amount, true end

local problem = save_checked(account, NO_ANCESTORS)
if problem ~= nil then return problem end
if meta ~= nil then redis.call('HSET', account_key, 'm:' .. bucket.id, meta) end
if floor ~= nil then redis.call('HSET', account_key, 'fl', fmt(floor)) end
if marker ~= nil then
  -- ARGV[4] as sent: tostring of a Lua number turns large amounts into exponent notation.
  redis.call('HSET', idempotency_key, marker, bucket.id .. ' ' .. ARGV[4])
  return 'ok 0 ' .. bucket.id .. ' ' .. ARGV[4]
end
return 'ok 0 ' .. bucket.id
