-- claim.lua: bind one subscriber identity to an account (balance/directory.py "register").
--
-- KEYS: 1 the identity's lookup key (id:<kind>:<value>; no hash tag: one key, one slot).
-- ARGV: 1 account id, 2 now (epoch seconds, the caller's clock: tests inject it).
-- Returns: "ok" when the identity is now bound to the account (it was free, already this
--       account's, or held in quarantine that ended at or before now), else "taken".
-- Invariants: one identity names one account; an identity in quarantine ("~<until> <account>",
--       written when its account was terminated) goes to no account before <until>. The check
--       and the write are one script so two registrations racing for a quarantine that just
--       ended cannot both win (a GET, then a SET, from two clients could).

local key, account_id, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local held = redis.call('GET', key)
if held ~= false and held ~= account_id then
  local until_seconds = tonumber(string.match(held, '^~(%d+) '))
  if until_seconds == nil or until_seconds > now then return 'taken' end
end
redis.call('SET', key, account_id)
return 'ok'
