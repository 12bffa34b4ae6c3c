-- refund.lua: REFUND_ACCOUNT, a credit to the first main bucket, idempotent by (session id,
-- request number) like an event charge (RULES.md "refund").
--
-- KEYS: 1 session hash, 2 account hash, 3 parent account hash (own key again when none).
-- ARGV: 1 account id, 2 session id, 3 request number, 4 amount micros, 5 now, 6 tombstone
--       lifetime (s), 7 parent id ('' for none), 8 deadline (epoch ms, Redis's clock).
-- Returns: the charge.lua reply format with no items; "0 expired 0 0 0 0" past the deadline.
-- Invariants: as charge.lua; past the deadline, as charge.lua, nothing is written.

local session_key, account_key, parent_key = KEYS[1], KEYS[2], KEYS[3]
local account_id, number, amount = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local now, tombstone, parent_id = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]

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
if account.st ~= 'active' then return '0 account_blocked 0 0 0 0' end
local parent = nil
if parent_id ~= '' then parent = load_account(parent_key, parent_id) end

local bucket, meta = first_of_kind(account, 'main'), nil
if bucket == nil then bucket, meta = new_bucket(account, 'main', '0', '0', '0', '') end
bucket.amount, bucket.dirty = bucket.amount + amount, true
account.cr, account.dirty_cr = account.cr + amount, true
local problem = save_checked(account, nil)
if problem ~= nil then return problem end
if meta ~= nil then redis.call('HSET', account_key, 'm:' .. bucket.id, meta) end
local reply = 'ok ' .. fmt(available(account, parent, now)) .. ' 0 0 0'
write_tombstone(session_key, account_id, number, reply, tombstone)
return '0 ' .. reply
