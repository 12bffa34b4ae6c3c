-- view.lua: what a new reservation of the account could draw now (RULES.md "balance_micros").
--
-- KEYS: 1 account hash, 2 parent account hash (the account's own key again when it has no parent),
--       then the hashes of the ancestors above the parent, up to the root (as charge.lua).
-- ARGV: 1 account id, 2 the ancestors' ids as charge.lua's ARGV[9], 3 now (epoch s).
-- Returns: the available micros as a string, or '' if the account does not exist. Writes nothing.

local account = load_account(KEYS[1], ARGV[1])
if account == nil then return '' end
local ancestors, wrong = load_ancestors(ARGV[2], KEYS, 2, 3)
if ancestors == nil then return redis.error_reply(wrong) end
return fmt(available(account, ancestors, tonumber(ARGV[3])))
