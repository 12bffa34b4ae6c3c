-- cut.lua: the usage cut of the bill run, idempotent by its id (RULES.md "cut").
--
-- KEYS: 1 account hash (the consuming account), 2 idempotency hash of the hierarchy, then the
--       hashes of its ancestors, parent first, up to the root (none for a root).
-- ARGV: 1 account id, 2 cut id, 3 the ancestors' ids as charge.lua's ARGV[9], 4 micros to cut
--       from the account's own credit line, then per ancestor level cut 3 fields: level (1 = the
--       parent), micros drawn from its buckets, micros drawn from its credit line.
-- Returns: "<outcome> <replayed 0|1> <micros applied>", then for invalid " <reason naming the
--       field>"; a replay answers the micros (own line plus pools) the id was first applied with.
-- Invariants: as charge.lua, checked before writing: unbilled, billed, pool used and pool drawn
--       never below 0; a refusal writes nothing, not even the id.

local account_key, idempotency_key = KEYS[1], KEYS[2]
local account_id, ancestor_ids = ARGV[1], ARGV[3]
local own_line = ARGV[4] + 0

local account = load_account(account_key, account_id)
if account == nil then return 'unknown_account 0 0' end
local marker = 'u:' .. account_id .. ':' .. ARGV[2]
local previous = call('HGET', idempotency_key, marker)
if previous then return 'ok 1 ' .. previous end
if account.par ~= parent_of(ancestor_ids) then
  return redis.error_reply('HIERARCHY ' .. account_id .. ' has parent ' .. account.par)
end
local ancestors, wrong = load_ancestors(ancestor_ids, KEYS, 3, 4)
if ancestors == nil then return redis.error_reply(wrong) end

-- What each account's billed counter gains (fields outside load_account's counters).
local billed = {}
local function bill(node, micros, field)
  if node.pay ~= 'postpaid' then return field .. ': account ' .. node.id .. ' is not postpaid' end
  if micros > node.ub then
    return field .. ': ' .. fmt(micros) .. ' is more than the unbilled ' .. fmt(node.ub) .. ' of account ' .. node.id
  end
  node.ub, node.dirty_ub = node.ub - micros, true
  billed[node] = (billed[node] or (node.bl or 0) + 0) + micros
  return nil
end

local total, problem = own_line, nil
if own_line > 0 then problem = bill(account, own_line, 'line_micros') end
local drawn_changed = false
for i = 5, #ARGV, 3 do
  if problem ~= nil then break end
  local level, from_buckets, from_line = ARGV[i] + 0, ARGV[i + 1] + 0, ARGV[i + 2] + 0
  local payer = ancestors[level]
  local amount = from_buckets + from_line
  if payer == nil then
    problem = 'pools: level ' .. level .. ' is above the root of account ' .. account_id
  else
    local field = DRAWN_FIELD[level]
    local drawn_before = (account[field] or 0) + 0
    if amount > drawn_before then
      problem = 'pools: level ' .. level .. ' cuts ' .. fmt(amount) .. ', more than the ' .. fmt(drawn_before)
        .. ' account ' .. account_id .. ' committed from the pool of ' .. payer.id
    else
      account[field], drawn_changed = drawn_before - amount, true
      if from_line > 0 then problem = bill(payer, from_line, 'pools: level ' .. level .. ' line_micros') end
      add_pool_used(account, ancestors, level, -amount)
      total = total + amount
    end
  end
end
if problem ~= nil then return 'invalid 0 0 ' .. problem end

problem = save_checked(account, ancestors)
if problem ~= nil then return problem end
for node, value in pairs(billed) do call('HSET', node.key, 'bl', fmt(value)) end
if drawn_changed then
  local fields = {}
  for level = 1, MAX_LEVELS - 1 do
    local value = account[DRAWN_FIELD[level]]
    if value then
      fields[#fields + 1] = DRAWN_FIELD[level]
      fields[#fields + 1] = fmt(value + 0)
    end
  end
  call('HSET', account_key, unpack(fields))
end
call('HSET', idempotency_key, marker, fmt(total))
return 'ok 0 ' .. fmt(total)
