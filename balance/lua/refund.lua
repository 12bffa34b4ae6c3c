-- refund.lua: REFUND_ACCOUNT, a credit to the first main bucket, idempotent by (session id,
-- request number) like an event charge (RULES.md "refund").
--
-- KEYS: 1 session hash, 2 account hash, 3 parent account hash (own key again when none),
--       4 the account's refund-day hash (keys.py: d day, s micros refunded that day), then the
--       hashes of the ancestors above the parent, up to the root (as charge.lua).
-- ARGV: 1 account id, 2 session id, 3 request number, 4 amount micros, 5 now, 6 tombstone
--       lifetime (s), 7 the ancestors' ids as charge.lua's ARGV[9], 8 deadline (epoch ms, Redis's clock),
--       9 the caller's day (any text naming the day the limit counts in), 10 the most the
--       account's refunds may credit that day, micros (0: no limit).
-- Returns: the charge.lua reply format with no items; "0 expired 0 0 0 0" past the deadline;
--       "0 refund_limit 0 0 0 0" when the day's refunds with this one would pass the limit.
-- Invariants: as charge.lua; past the deadline or over the limit, nothing is written. The
--       day's sum grows with every refund applied, in the same call (several servers share it).

local session_key, account_key, day_key = KEYS[1], KEYS[2], KEYS[4]
local account_id, number, amount = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local now, tombstone, ancestor_ids = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]

local account = load_account(account_key, account_id)
if account == nil then return '0 unknown_account 0 0 0 0' end
local session = redis.call('HMGET', session_key, 'a', 'n', 'r')
if session[2] then
  local last = tonumber(session[2])
  if number == last and session[1] == account_id then return '1 ' .. session[3] end
  if number < last then return '0 stale_request 0 0 0 0' end
  return '0 unknown_session 0 0 0 0'
end
if past_deadline(ARGV[8]) then return '0 expired 0 0 0 0' end
local ancestors, wrong = load_ancestors(ancestor_ids, KEYS, 3, 5)
if ancestors == nil then return redis.error_reply(wrong) end
-- RULES.md "Effective status": an event, so only an account active with all its ancestors.
if effective_status(account, ancestors) ~= 'active' then return '0 account_blocked 0 0 0 0' end
local day, day_limit = ARGV[9], tonumber(ARGV[10])
local refunded = redis.call('HMGET', day_key, 'd', 's')
local day_total = amount
if refunded[1] == day then day_total = day_total + tonumber(refunded[2]) end
if day_limit > 0 and day_total > day_limit then return '0 refund_limit 0 0 0 0' end

local bucket, meta = first_of_kind(account, 'main'), nil
if bucket == nil then bucket, meta = new_bucket(account, 'main', '0', '0', '0', '') end
bucket.amount, bucket.dirty = bucket.amount + amount, true
account.cr, account.dirty_cr = account.cr + amount, true
local problem = save_checked(account, NO_ANCESTORS)
if problem ~= nil then return problem end
if meta ~= nil then redis.call('HSET', account_key, 'm:' .. bucket.id, meta) end
redis.call('HSET', day_key, 'd', day, 's', fmt(day_total))
redis.call('EXPIRE', day_key, 172800) -- two days: outlives any local day; a new day overwrites it
local reply = 'ok ' .. fmt(available(account, ancestors, now)) .. ' 0 0 0'
write_tombstone(session_key, account_id, number, reply, tombstone)
return '0 ' .. reply
