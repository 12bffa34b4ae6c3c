-- expire.lua: session supervision (RULES.md "expire"): close one session if its expiry has passed,
-- returning everything its reservations hold.
--
-- KEYS: 1 session hash, 2 account hash, 3 parent account hash (own key again when none),
--       4 expiry zset of the hierarchy, then the hashes of the ancestors above the parent, up to
--       the root (as charge.lua).
-- ARGV: 1 account id, 2 session id, 3 now, 4 tombstone lifetime (s), 5 the ancestors' ids as
--       charge.lua's ARGV[9].
-- Returns: 1 if the session was closed now, else 0 (already closed or gone: its zset entry is
--       removed; or renewed since the caller read the zset: its score, the expiry, is later).
-- Invariants: as charge.lua; the last reply stays stored for replay.

local session_key, account_key, expiry_key = KEYS[1], KEYS[2], KEYS[4]
local account_id, session_id, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local tombstone, ancestor_ids = tonumber(ARGV[4]), ARGV[5]
local member = account_id .. '|' .. session_id

-- The session's expiry is its score (charge.lua writes it with every request it applies).
local expiry = tonumber(redis.call('ZSCORE', expiry_key, member))
if expiry ~= nil and expiry > now then return 0 end
local session = {}
local stored = redis.call('HGETALL', session_key)
for i = 1, #stored, 2 do session[stored[i]] = stored[i + 1] end
if expiry == nil or session.n == nil or session.c == '1' or session.a ~= account_id then
  redis.call('ZREM', expiry_key, member)
  return 0
end

local account = load_account(account_key, account_id)
local ancestors, wrong = load_ancestors(ancestor_ids, KEYS, 3, 5)
if ancestors == nil then return redis.error_reply(wrong) end
for field, value in pairs(session) do
  if string.sub(field, 1, 2) == 'g:' then
    return_reservation(decode_reservation(value, account, ancestors), account, ancestors)
  end
end
local problem = save_checked(account, ancestors)
if problem ~= nil then return problem end
write_tombstone(session_key, account_id, session.n, session.r, tombstone)
redis.call('ZREM', expiry_key, member)
return 1
