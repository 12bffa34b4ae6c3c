-- view.lua: what a new reservation of the account could draw now (RULES.md "balance_micros").
--
-- KEYS: 1 account hash, 2 parent account hash (the account's own key again when it has no parent).
-- ARGV: 1 account id, 2 parent id ('' for none), 3 now (epoch s).
-- Returns: the available micros as a string, or '' if the account does not exist. Writes nothing.

local account = load_account(KEYS[1], ARGV[1])
if account == nil then return '' end
local parent = nil
if ARGV[2] ~= '' then parent = load_account(KEYS[2], ARGV[2]) end
return fmt(available(account, parent, tonumber(ARGV[3])))
