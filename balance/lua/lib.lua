-- lib.lua: the money rules of balance/RULES.md, shared by every operation script.
--
-- balance/scripts.py puts it in front of each operation file (one self-contained EVAL script
-- per operation) and, for Redis >= 7.0, once in front of all of them in one function library,
-- where each operation is a function of (KEYS, ARGV) and this chunk runs once, at load. Nothing
-- here touches a key it was not given: the operation passes key names it received in KEYS.
--
-- Numbers: Redis Lua numbers are doubles; every amount stays below 2^53 (RULES.md), so integer
-- arithmetic is exact. Integers are written back with fmt() ('%d': Lua 5.1 casts to a 64-bit long,
-- exact below 2^53 and half the cost of the float formatter), never tostring(), which would
-- print 1e+15. Stored numbers and numeric ARGV are decimal integers written by these scripts or
-- by balance/store.py, so they are read with `text + 0` (one conversion; tonumber() makes two).
--
-- Discipline: an operation loads what it needs, computes every change in Lua tables, checks the
-- invariants, and only then writes. Redis does not roll back a script that fails half way, so a
-- failed assertion must happen before the first write.
--
-- Cost: this runs in Redis's single thread on every charge (as an EVAL script the whole chunk,
-- these function definitions included, runs again on every call; as a function library, once).
-- Counted in instructions (valgrind), each closure made, table field set, function called, C
-- function called (math.floor included) and pattern matched costs hundreds to thousands; the
-- whole charge is a few hundred thousand. So the library is a few functions, small helpers are
-- written out where they are used, tables are made at their final size, floor and ceil are
-- written with `%`, a bucket's metadata is parsed only when it is not the plain main bucket (and,
-- in the library, once per text), buckets are sorted into drawing order only when two share a
-- kind, a hold points at its bucket, and numbers already held as text are not formatted again.
-- bench/script_cost.py counts the result, bench/balance.py times it (INFO commandstats).

-- Standard and Redis functions as locals (an upvalue is cheaper than a global and a field).
-- In a function library this chunk runs once, at FUNCTION LOAD, where nothing but
-- redis.register_function can be reached, so balance/scripts.py runs bind_library(<form>) at
-- the start of every operation, in both forms.
local format, byte, sub, find, match, gmatch, call

local INFINITY = 1e300
local NO_SERVICES = {} -- shared by every bucket open to any service; never written

-- Kept between calls while the function library stays loaded: what a field of an account hash
-- names, and what a bucket's metadata says, parsed (load_account). Each maps a text to what
-- that text always means, so nothing in them goes stale; each is emptied when it reaches
-- CACHE_LIMIT entries. What they hold is shared: never written. An EVAL script, which starts
-- every call afresh, keeps nothing (`caching` false, the caches EMPTY) and reads each field
-- into one scratch table instead.
local CACHE_LIMIT = 4096
local EMPTY = {} -- never written
local caching = false
local field_names = EMPTY -- field -> {text, id, amount (a 'q:' field)}, or false
local meta_terms = EMPTY -- metadata -> {kind, from, until, priority, services, any_service}
local tariff_terms = EMPTY -- "price per block first" -> its tariff (tariff_of)
local scratch_name = {text = false, id = false, amount = false}

-- `library`: true in the function library, false in an EVAL script.
local function bind_library(library)
  format, byte, sub, find, match, gmatch = string.format, string.byte, string.sub, string.find, string.match,
    string.gmatch
  call, caching = redis.call, library
  if library and field_names == EMPTY then -- its first call
    field_names, meta_terms, tariff_terms = {}, {}, {}
    -- The functions' Lua VM holds little but this library, and each call leaves garbage behind:
    -- start a collection cycle when the heap has grown to 4x what the last one kept, not 2x
    -- (Lua's default), so that the library's live objects are marked half as often (-1.6 % of
    -- a charge's instructions, bench/script_cost.py; Redis still steps the collector itself).
    collectgarbage('setpause', 400)
  end
end

-- `cache` with `value` kept under `key` (its entry count under 0): the same table, or a new one
-- once it held CACHE_LIMIT entries; an EVAL script's cache stays EMPTY.
local function remember(cache, key, value)
  if not caching then return cache end
  local count = cache[0] or 0
  if count >= CACHE_LIMIT then cache, count = {}, 0 end
  cache[key], cache[0] = value, count + 1
  return cache
end

local function fmt(n)
  if n == 0 then return '0' end -- the most common values, without a call to format
  if n == 1 then return '1' end
  return format('%d', n)
end

-- ---------------------------------------------------------------------------------------------
-- tariff arithmetic (RULES.md "Units and arithmetic"). For x >= 0, x - x % 1 is floor(x) and
-- x % 1 == 0 and x or x - x % 1 + 1 is ceil(x), exactly, for every double.

-- charged(units) for tariff `t` (a multiple of its block, at least its first units; 0 for 0).
local function charged(t, units)
  if units <= 0 then return 0 end
  local blocks = units / t.block
  if blocks % 1 ~= 0 then blocks = blocks - blocks % 1 + 1 end
  local c = blocks * t.block
  if c < t.first then return t.first end
  return c
end

local function cost(t, units)
  local price = t.price
  if units <= 0 or price == 0 then return 0 end
  local c, per = charged(t, units), t.per
  local whole = c / per
  whole = whole - whole % 1
  local rest = (c - whole * per) * price / per
  if rest % 1 ~= 0 then rest = rest - rest % 1 + 1 end
  return whole * price + rest
end

-- `n` units at `price` per `per` units as whole + rest / per (rest exact, near [0, per)): the
-- split form of cost, so that two parts can be summed before rounding up once.
local function priced(n, price, per)
  local whole = n / per
  whole = whole - whole % 1
  local rest = (n - whole * per) * price
  local more = rest / per
  more = more - more % 1
  return whole * price + more, rest - more * per
end

-- RULES.md "Tariff change" (balance/tariff.py cost_across): `before` then `after` units of one
-- usage, charged once; the before units at t's price, the rest of the charged units at
-- `after_price`; one rounding up to a whole micro.
local function cost_across(t, before, after, after_price)
  if after <= 0 then return cost(t, before) end
  local c, per = charged(t, before + after), t.per
  local whole_before, rest_before = priced(before, t.price, per)
  local whole_after, rest_after = priced(c - before, after_price, per)
  local rest = (rest_before + rest_after) / per
  if rest % 1 ~= 0 then rest = rest - rest % 1 + 1 end
  return whole_before + whole_after + rest
end

-- A tariff: {price, per, block, first, text}, where `text` is the four numbers as the charge's
-- ARGV and a stored reservation carry them: "price_micros per_units block_units first_units".
-- Read once per text while the function library stays loaded (tariff_terms: shared, never
-- written), once per call in an EVAL script. Text in another spacing or number syntax is read
-- by the general reader, and its tariff carries the four numbers in the usual form.
local function tariff_of(text)
  local t = tariff_terms[text]
  if t ~= nil then return t end
  local price, per, block, first = match(text, '^(%d+) (%d+) (%d+) (%d+)$')
  if price ~= nil then
    t = {price = price + 0, per = per + 0, block = block + 0, first = first + 0, text = text}
  else
    local numbers = {}
    for word in gmatch(text, '%S+') do numbers[#numbers + 1] = tonumber(word) or 0 end
    t = {price = numbers[1] or 0, per = numbers[2] or 0, block = numbers[3] or 0, first = numbers[4] or 0}
    t.text = fmt(t.price) .. ' ' .. fmt(t.per) .. ' ' .. fmt(t.block) .. ' ' .. fmt(t.first)
  end
  tariff_terms = remember(tariff_terms, text, t)
  return t
end

-- ---------------------------------------------------------------------------------------------
-- accounts
--
-- An account is its hash's fields under their own names (counters as numbers), its buckets in
-- id order, `dirty_<counter>` (the counter changed) and `kinds` (drawing order, see of_kind). A
-- bucket is {id, text (its id as stored), amount, kind, from, until, priority, services,
-- any_service, dirty}.

-- What `field` names: 'q:<id>' (113 'q', 58 ':') a bucket's amount, 'm:<id>' (109 'm') its
-- metadata; false for any other field.
local function name_field(field)
  local first, named = byte(field, 1), false
  if (first == 113 or first == 109) and byte(field, 2) == 58 then
    local text = sub(field, 3)
    if not caching then
      scratch_name.text, scratch_name.amount = text, first == 113 -- its id is read only for a new bucket
      return scratch_name
    end
    named = {text = text, id = text + 0, amount = first == 113}
  end
  field_names = remember(field_names, field, named)
  return named
end

-- "kind|valid_from|valid_until|priority|service,service" (balance/keys.py), parsed.
local function parse_terms(meta)
  local kind, from, till, priority, services = match(meta, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  local terms = {kind = kind, from = 0, ['until'] = 0, priority = 0, services = NO_SERVICES, any_service = true}
  if from ~= '0' then terms.from = tonumber(from) or 0 end
  if till ~= '0' then terms['until'] = tonumber(till) or 0 end
  if priority ~= '0' then terms.priority = tonumber(priority) or 0 end
  if services ~= '' then
    terms.any_service = false
    if not find(services, ',', 1, true) then
      terms.services = {[services] = true}
    else
      terms.services = {}
      for service in gmatch(services, '[^,]+') do terms.services[service] = true end
    end
  end
  meta_terms = remember(meta_terms, meta, terms)
  return terms
end

-- Returns the account as a table, or nil if the key does not exist.
local function load_account(key, id)
  local flat = call('HGETALL', key)
  local count = #flat
  if count == 0 then return nil end
  local buckets = {}
  -- Every field it can get, so that filling it in never grows it: counters start as 0,
  -- text fields as false ('' for the parent id).
  local account = {key = key, id = id, buckets = buckets, kinds = false,
    dirty_cr = false, dirty_db = false, dirty_cm = false, dirty_hd = false, dirty_lh = false, dirty_ub = false,
    dirty_pu = false,
    cr = 0, db = 0, cm = 0, hd = 0, lh = 0, ub = 0, pu = 0, lim = 0, cap = 0,
    pay = false, st = false, par = '', cur = false}
  local in_order, last_id = true, -INFINITY
  local bucket, bucket_text = nil, nil -- the last bucket seen: its 'q:' and 'm:' fields sit together
  for i = 1, count, 2 do
    local field, value = flat[i], flat[i + 1]
    local known = account[field]
    if known == 0 then
      if value ~= '0' then account[field] = value + 0 end -- a counter
    elseif known ~= nil then
      account[field] = value -- cur, pay, st, par
    else
      local named = field_names[field]
      if named == nil then named = name_field(field) end
      if named then
        local text = named.text
        if text ~= bucket_text then
          local bucket_id = named.id or text + 0
          bucket, bucket_text = nil, text
          for j = 1, #buckets do
            if buckets[j].id == bucket_id then bucket = buckets[j] end
          end
          if bucket == nil then
            bucket = {id = bucket_id, text = text, amount = 0, kind = false, from = 0, ['until'] = 0, priority = 0,
              services = NO_SERVICES, any_service = true, dirty = false}
            buckets[#buckets + 1] = bucket
            if bucket_id < last_id then in_order = false end
            last_id = bucket_id
          end
        end
        if named.amount then
          if value ~= '0' then bucket.amount = value + 0 end
        elseif value == 'main|0|0|0|' then
          bucket.kind = 'main' -- the plain main bucket: nothing to parse
        else
          local terms = meta_terms[value] or parse_terms(value)
          bucket.kind, bucket.from, bucket['until'] = terms.kind, terms.from, terms['until']
          bucket.priority, bucket.services, bucket.any_service = terms.priority, terms.services, terms.any_service
        end
      else
        account[field] = value -- a field the engine does not use
      end
    end
  end
  if not in_order then table.sort(buckets, function(a, b) return a.id < b.id end) end
  return account
end

-- The buckets to walk for `kind` in drawing order, usable or not: callers skip other kinds and
-- unusable buckets as they go (the order depends on neither amounts nor now, so it is worked out
-- once per call). While no two buckets share a kind (`account.kinds == true`), that is the
-- account's own list, and callers take it without a call.
local function of_kind(account, kind)
  local kinds = account.kinds
  if kinds == false then
    kinds = true
    local buckets = account.buckets
    for i = 2, #buckets do
      for j = 1, i - 1 do
        if buckets[i].kind == buckets[j].kind then kinds = {} end
      end
    end
    account.kinds = kinds
  end
  if kinds == true then return account.buckets end
  local list = kinds[kind]
  if list == nil then
    list = {}
    local buckets = account.buckets
    for i = 1, #buckets do
      if buckets[i].kind == kind then list[#list + 1] = buckets[i] end
    end
    -- RULES.md "Drawing order": valid_until ascending (0 = never, last), priority, bucket id.
    table.sort(list, function(a, b)
      local ua = a['until'] == 0 and INFINITY or a['until']
      local ub = b['until'] == 0 and INFINITY or b['until']
      if ua ~= ub then return ua < ub end
      if a.priority ~= b.priority then return a.priority < b.priority end
      return a.id < b.id
    end)
    kinds[kind] = list
  end
  return list
end

local function credit_line(account)
  if account.pay ~= 'postpaid' then return 0 end
  local free = account.lim - account.ub - account.lh
  if free < 0 then return 0 end
  return free
end

-- Usable main and bonus buckets (RULES.md "Accounts and buckets"); a sum needs no order.
local function money_in_buckets(account, now)
  local total = 0
  local buckets = account.buckets
  for i = 1, #buckets do
    local bucket = buckets[i]
    local kind, amount, till = bucket.kind, bucket.amount, bucket['until']
    if (kind == 'main' or kind == 'bonus') and amount > 0 and bucket.from <= now and (till == 0 or now < till) then
      total = total + amount
    end
  end
  return total
end

-- ---------------------------------------------------------------------------------------------
-- the hierarchy (RULES.md "Company money")
--
-- `ancestors` lists an account's ancestors, parent first, root last (NO_ANCESTORS for a root).
-- A hold on the pool of the ancestor `level` levels up names it by its source letter: bucket
-- and credit line, p/P for the parent, q/Q, r/R, s/S above it (MAX_LEVELS bounds how many).

-- The most levels a hierarchy has, its root included (balance/types.py MAX_HIERARCHY_LEVELS, which
-- says why): the ancestors of an account are at most MAX_LEVELS - 1.
local MAX_LEVELS = 5
local NO_ANCESTORS = {} -- never written
local POOL_BUCKET = {'p', 'q', 'r', 's'}
local POOL_LINE = {'P', 'Q', 'R', 'S'}
local POOL_LEVEL = {p = 1, P = 1, q = 2, Q = 2, r = 3, R = 3, s = 4, S = 4}
local IS_LINE = {C = true, P = true, Q = true, R = true, S = true}

-- RULES.md "Where money came from": what the item being committed drew from sources other than
-- the account's own buckets, by source letter (false while none); charge.lua sets it to false
-- before each item and writes it into the item's usage record (drawn_json).
local drawn = false
-- The account hash fields of `pool_drawn[level]` (balance/keys.py).
local DRAWN_FIELD = {'d1', 'd2', 'd3', 'd4'}

-- The account's ancestors, loaded from keys[first] (the parent) and keys[more] on (the others),
-- checked against `ids` (their ids, parent first, space-separated: the chain the store knows) and
-- against the tree as stored (each names the next as its parent, the last none). Returns the list,
-- or nil and the error reply's text when they differ (the store's chain is wrong).
local function load_ancestors(ids, keys, first, more)
  if ids == '' then return NO_ANCESTORS end
  local ancestors, count = {}, 0
  for id in gmatch(ids, '%S+') do
    local ancestor = load_account(keys[count == 0 and first or more + count - 1], id)
    if ancestor == nil then return nil, 'HIERARCHY ancestor ' .. id .. ' missing' end
    if count > 0 and ancestors[count].par ~= id then
      return nil, 'HIERARCHY ' .. ancestors[count].id .. ' has parent ' .. ancestors[count].par .. ', not ' .. id
    end
    count = count + 1
    ancestors[count] = ancestor
  end
  if ancestors[count].par ~= '' then return nil, 'HIERARCHY ' .. ancestors[count].id .. ' is not a root' end
  return ancestors
end

-- How bad each status is: an account counts as the worst of its own status and its ancestors'.
local STATUS_RANK = {active = 0, suspended = 1, barred = 2, terminated = 3}

-- RULES.md "Effective status": the worst status of the account and every ancestor, so a line
-- under a suspended, barred or terminated node is treated as that node is, whatever its own
-- status (a node's change never overwrites its lines': a barred line stays barred).
local function effective_status(account, ancestors)
  local worst = account.st
  for i = 1, #ancestors do
    local status = ancestors[i].st
    if (STATUS_RANK[status] or 0) > (STATUS_RANK[worst] or 0) then worst = status end
  end
  return worst
end

-- The first id of `ids` (the parent's), '' for none.
local function parent_of(ids)
  local space = find(ids, ' ', 1, true)
  if space == nil then return ids end
  return sub(ids, 1, space - 1)
end

-- Adds `amount` (negative: gives back) to the pool used of every node from the account up to,
-- not including, its ancestor `level` levels up: each of their subtrees drew it from above them.
local function add_pool_used(account, ancestors, level, amount)
  account.pu, account.dirty_pu = account.pu + amount, true
  for i = 1, level - 1 do
    local node = ancestors[i]
    node.pu, node.dirty_pu = node.pu + amount, true
  end
end

-- How much more node `level - 1` (0: the account) lets its subtree draw from above it.
local function cap_room(account, ancestors, level)
  local node = level == 1 and account or ancestors[level - 1]
  return node.cap - node.pu
end

-- RULES.md "balance_micros": what a new reservation could draw now. The pools in drawing order,
-- each within `room`, the least any node between the account and that pool still allows: every
-- micro drawn from one pool counts against the caps of every node below it.
local function available(account, ancestors, now)
  local total = money_in_buckets(account, now)
  if account.pay == 'postpaid' then total = total + credit_line(account) end
  local room = INFINITY
  for level = 1, #ancestors do
    local fresh = cap_room(account, ancestors, level)
    if fresh < room then room = fresh end
    if room <= 0 then break end
    local ancestor = ancestors[level]
    local pool = money_in_buckets(ancestor, now) + credit_line(ancestor)
    local take = pool < room and pool or room
    total, room = total + take, room - take
  end
  return total
end

local function check_invariants(account)
  local money = 0
  local buckets = account.buckets
  for i = 1, #buckets do
    local bucket = buckets[i]
    -- RULES.md "debit_rental": a main bucket's floor is minus the account's main floor.
    if bucket.amount < 0 and not (bucket.kind == 'main' and bucket.amount >= -(account.fl or 0)) then
      return redis.error_reply('INVARIANT ' .. account.id .. ' bucket ' .. bucket.id .. ' below its floor')
    end
    if bucket.kind == 'main' or bucket.kind == 'bonus' then money = money + bucket.amount end
  end
  if account.hd < 0 then return redis.error_reply('INVARIANT ' .. account.id .. ' hd below 0') end
  if account.lh < 0 then return redis.error_reply('INVARIANT ' .. account.id .. ' lh below 0') end
  if account.ub < 0 then return redis.error_reply('INVARIANT ' .. account.id .. ' ub below 0') end
  if account.pu < 0 then return redis.error_reply('INVARIANT ' .. account.id .. ' pu below 0') end
  if account.cr - account.db ~= money + account.hd then
    return redis.error_reply('INVARIANT ' .. account.id .. ' credits - debits ~= money + held')
  end
  return nil
end

-- Writes the changed fields of the account (after the invariants held).
local function save_account(account)
  local args, n = {false, false, false, false, false, false, false, false, false, false}, 0
  local buckets = account.buckets
  for i = 1, #buckets do
    local bucket = buckets[i]
    if bucket.dirty then
      args[n + 1], args[n + 2] = 'q:' .. bucket.text, fmt(bucket.amount)
      n = n + 2
      bucket.dirty = false
    end
  end
  -- The counters one by one: a walk with pairs() costs a C call per field.
  if account.dirty_hd then args[n + 1], args[n + 2], n = 'hd', fmt(account.hd), n + 2 end
  if account.dirty_db then args[n + 1], args[n + 2], n = 'db', fmt(account.db), n + 2 end
  if account.dirty_cm then args[n + 1], args[n + 2], n = 'cm', fmt(account.cm), n + 2 end
  if account.dirty_cr then args[n + 1], args[n + 2], n = 'cr', fmt(account.cr), n + 2 end
  if account.dirty_lh then args[n + 1], args[n + 2], n = 'lh', fmt(account.lh), n + 2 end
  if account.dirty_ub then args[n + 1], args[n + 2], n = 'ub', fmt(account.ub), n + 2 end
  if account.dirty_pu then args[n + 1], args[n + 2], n = 'pu', fmt(account.pu), n + 2 end
  if account.dirty_drawn then -- RULES.md "Where money came from": fields outside the usual counters
    for level = 1, MAX_LEVELS - 1 do
      local value = account[DRAWN_FIELD[level]]
      if value then args[n + 1], args[n + 2], n = DRAWN_FIELD[level], fmt(value + 0), n + 2 end
    end
    account.dirty_drawn = false
  end
  account.dirty_hd, account.dirty_db, account.dirty_cm, account.dirty_cr = false, false, false, false
  account.dirty_lh, account.dirty_ub, account.dirty_pu = false, false, false
  if n > 0 then call('HSET', account.key, unpack(args, 1, n)) end
end

-- Checks the invariants of the accounts a script touched and, only if they hold, writes them.
-- Returns the error reply to give back, or nil once both are saved.
local function save_checked(account, ancestors)
  local problem = check_invariants(account)
  for i = 1, #ancestors do
    if problem == nil then problem = check_invariants(ancestors[i]) end
  end
  if problem ~= nil then return problem end
  save_account(account)
  for i = 1, #ancestors do save_account(ancestors[i]) end
  return nil
end

-- The account's first bucket of `kind` (lowest id), or nil.
local function first_of_kind(account, kind)
  for _, bucket in ipairs(account.buckets) do
    if bucket.kind == kind then return bucket end
  end
  return nil
end

-- A new, empty bucket with the next free id; returns it and the 'm:' metadata to write for it
-- (valid from, valid until, priority and services as they are stored, balance/keys.py).
local function new_bucket(account, kind, from, till, priority, services)
  local next_id = 1
  for _, bucket in ipairs(account.buckets) do
    if bucket.id >= next_id then next_id = bucket.id + 1 end
  end
  local bucket = {id = next_id, text = format('%d', next_id), amount = 0, kind = kind, from = tonumber(from) or 0,
    ['until'] = tonumber(till) or 0, priority = tonumber(priority) or 0, services = NO_SERVICES,
    any_service = true, dirty = false}
  account.buckets[#account.buckets + 1] = bucket
  account.kinds = false -- the drawing order is worked out again with the new bucket
  return bucket, table.concat({kind, from, till, priority, services}, '|')
end

-- Whether Redis's clock has passed `deadline` (epoch milliseconds, as text): the caller has
-- given up on this call (RULES.md "Deadlines"). TIME is read in Redis, not sent by the caller:
-- the call may run long after it was sent (Redis stalled, the command in a socket buffer). A
-- script may read TIME before writing because Redis >= 5.0 replicates and logs its writes, not
-- the script (effects replication, the only mode from 7.0): the append-only file and replicas
-- replay the writes and never read the clock again.
local function past_deadline(deadline)
  local clock = call('TIME')
  return clock[1] * 1000 + clock[2] / 1000 > deadline + 0
end

-- Leaves a closed session as a tombstone: it still answers its last request number (replays)
-- for `lifetime` seconds, and refuses anything newer.
local function write_tombstone(session_key, account_id, number, reply, lifetime)
  call('DEL', session_key)
  call('HSET', session_key, 'a', account_id, 'n', number, 'r', reply, 'c', '1')
  call('EXPIRE', session_key, lifetime)
end

-- ---------------------------------------------------------------------------------------------
-- holds and reservations
--
-- A hold is {src, bucket, amount}: src 'u' allowance units of an own bucket, 'c' micros of an
-- own monetary bucket, 'C' the own credit line, 'p' a parent bucket, 'P' the parent credit line,
-- and so on up the tree (POOL_BUCKET, POOL_LINE); bucket is the bucket's table (false for a
-- credit line).

-- Holds up to `left` micros from the usable bonus, then main buckets of `owner`; returns what
-- is left.
local function hold_from_buckets(owner, src, holds, left, now)
  for pass = 1, 2 do
    local kind = pass == 1 and 'bonus' or 'main'
    local list = owner.kinds == true and owner.buckets or of_kind(owner, kind)
    for i = 1, #list do
      if left == 0 then return 0 end
      local bucket = list[i]
      local amount, till = bucket.amount, bucket['until']
      if bucket.kind == kind and amount > 0 and bucket.from <= now and (till == 0 or now < till) then
        local take = amount < left and amount or left
        bucket.amount, bucket.dirty = amount - take, true
        owner.hd, owner.dirty_hd = owner.hd + take, true
        holds[#holds + 1] = {src = src, bucket = bucket, amount = take}
        left = left - take
      end
    end
  end
  return left
end

-- Holds up to `left` micros on `owner`'s postpaid credit line into `holds` (as source `src`);
-- returns what is still wanted.
local function hold_credit_line(owner, src, left, holds)
  local line = credit_line(owner)
  if line <= 0 or left <= 0 then return left end
  local take = line < left and line or left
  owner.lh, owner.dirty_lh = owner.lh + take, true
  holds[#holds + 1] = {src = src, bucket = false, amount = take}
  return left - take
end

-- Takes up to `want` micros from the money sources in drawing order into `holds` (as available()
-- walks them).
local function hold_money(account, ancestors, want, now, holds)
  local left = hold_credit_line(account, 'C', hold_from_buckets(account, 'c', holds, want, now), holds)
  local room = INFINITY
  for level = 1, #ancestors do
    if left <= 0 then return end
    local fresh = cap_room(account, ancestors, level)
    if fresh < room then room = fresh end
    if room <= 0 then return end
    local ancestor = ancestors[level]
    local pool_want = room < left and room or left
    local got = pool_want - hold_credit_line(ancestor, POOL_LINE[level],
      hold_from_buckets(ancestor, POOL_BUCKET[level], holds, pool_want, now), holds)
    if got > 0 then
      add_pool_used(account, ancestors, level, got)
      room, left = room - got, left - got
    end
  end
end

-- Commits `amount` (> 0) of one hold: units were taken from their bucket when held; money
-- leaves the hold for the bucket owner's debits or its unbilled usage (pool used keeps it, and
-- the drawer's pool drawn at that level grows).
local function commit_hold(hold, amount, account, ancestors)
  hold.amount = hold.amount - amount
  local src = hold.src
  if src == 'u' then return end
  local level = POOL_LEVEL[src]
  local owner = level and ancestors[level] or account
  if not IS_LINE[src] then
    owner.hd, owner.db = owner.hd - amount, owner.db + amount
    owner.dirty_hd, owner.dirty_db = true, true
  else
    owner.lh, owner.ub = owner.lh - amount, owner.ub + amount
    owner.dirty_lh, owner.dirty_ub = true, true
  end
  if src ~= 'c' then
    local tally = drawn
    if not tally then
      tally = {}
      drawn = tally
    end
    tally[src] = (tally[src] or 0) + amount
    if level then
      local name = DRAWN_FIELD[level]
      account[name], account.dirty_drawn = (account[name] or 0) + amount, true
    end
  end
end

-- The usage record's fields of `tally` (drawn): ',"line":<own credit line>' and ',"pools":[...]'
-- with one {"level","bucket","line"} per ancestor drawn on, ascending.
local function drawn_json(tally)
  local text = tally.C and (',"line":' .. fmt(tally.C)) or ''
  local pools = nil
  for level = 1, MAX_LEVELS - 1 do
    local from_buckets, from_line = tally[POOL_BUCKET[level]], tally[POOL_LINE[level]]
    if from_buckets or from_line then
      local part = '{"level":' .. level .. ',"bucket":' .. fmt(from_buckets or 0) .. ',"line":' .. fmt(from_line or 0)
        .. '}'
      pools = pools and (pools .. ',' .. part) or part
    end
  end
  if pools then text = text .. ',"pools":[' .. pools .. ']' end
  return text
end

-- Gives back whatever the hold still has, to its bucket or credit line (and the pools used).
local function return_hold(hold, account, ancestors)
  local amount = hold.amount
  if amount <= 0 then return end
  hold.amount = 0
  local src = hold.src
  local level = POOL_LEVEL[src]
  local owner = level and ancestors[level] or account
  if IS_LINE[src] then
    owner.lh, owner.dirty_lh = owner.lh - amount, true
  else
    if src ~= 'u' then owner.hd, owner.dirty_hd = owner.hd - amount, true end
    local bucket = hold.bucket
    bucket.amount, bucket.dirty = bucket.amount + amount, true
  end
  if level then add_pool_used(account, ancestors, level, -amount) end
end

-- A reservation: {units, allowance, tariff, change, holds}. Serialised as space-separated fields:
-- "units allowance price per block first [t<at>:<after price>:<granted at>] src:id:amount ...",
-- the tariff as its text; change (false without one) is the tariff change inside the grant
-- (RULES.md "Tariff change"): when, the price after it, and when the grant was made.
-- `units_text` is fmt(r.units) if already made.
local function encode_reservation(r, units_text)
  local text = (units_text or fmt(r.units)) .. ' ' .. fmt(r.allowance) .. ' ' .. r.tariff.text
  if r.change then text = text .. r.change.text end
  local holds = r.holds
  for i = 1, #holds do
    local hold = holds[i]
    if hold.amount > 0 then
      text = text .. ' ' .. hold.src .. ':' .. (hold.bucket and hold.bucket.text or '0') .. ':' .. fmt(hold.amount)
    end
  end
  return text
end

-- A hold read back: its bucket by id among its owner's buckets (the account's, or an ancestor's).
local function stored_hold(src, id, amount, account, ancestors)
  local bucket = false
  if not IS_LINE[src] then
    local level = POOL_LEVEL[src]
    local buckets = (level and ancestors[level] or account).buckets
    for i = 1, #buckets do
      if buckets[i].id == id then bucket = buckets[i] end
    end
  end
  return {src = src, bucket = bucket, amount = amount}
end

-- The reservation stored as `text` for `account` (and its `ancestors`). What
-- encode_reservation writes is read with one match and one find per hold; anything else (other
-- spacing or number syntax) by the general reader.
local function decode_reservation(text, account, ancestors)
  local units, allowance, tariff_text, rest = match(text, '^(%d+) (%d+) (%d+ %d+ %d+ %d+)(.*)$')
  local holds, change = {}, false
  if units ~= nil and byte(rest, 2) == 116 then -- ' t': a tariff change
    local _, stop, at, price, granted = find(rest, '^ t(%d+):(%d+):(%d+)')
    if stop == nil then
      units = nil
    else
      change = {at = at + 0, price = price + 0, granted = granted + 0, text = sub(rest, 1, stop)}
      rest = sub(rest, stop + 1)
    end
  end
  if units ~= nil then
    local at, last = 1, #rest
    while at <= last do
      local _, stop, src, id, amount = find(rest, '^ (%a):(%d+):(%d+)', at)
      if stop == nil then
        units = nil
        break
      end
      holds[#holds + 1] = stored_hold(src, id + 0, amount + 0, account, ancestors)
      at = stop + 1
    end
  end
  if units ~= nil then
    units = units + 0
    if allowance == '0' then allowance = 0 else allowance = allowance + 0 end
  else
    local fields = {}
    for word in gmatch(text, '%S+') do fields[#fields + 1] = word end
    units, allowance = tonumber(fields[1]) or 0, tonumber(fields[2]) or 0
    tariff_text = (fields[3] or '0') .. ' ' .. (fields[4] or '0') .. ' ' .. (fields[5] or '0') .. ' ' .. (fields[6] or '0')
    holds, change = {}, false
    for i = 7, #fields do
      local at, price, granted = match(fields[i], '^t(%d+):(%d+):(%d+)$')
      if at ~= nil then
        change = {at = at + 0, price = price + 0, granted = granted + 0, text = ' ' .. fields[i]}
      else
        local src, id, amount = match(fields[i], '^(%a):(%d+):(%d+)$')
        holds[#holds + 1] = stored_hold(src, tonumber(id), tonumber(amount), account, ancestors)
      end
    end
  end
  return {units = units, allowance = allowance, holds = holds, tariff = tariff_of(tariff_text), change = change}
end

-- RULES.md "Drawing order": reserve `units` (> 0) of `service`/`unit` at tariff `t`.
-- Returns the reservation (units 0 if nothing could be granted: then it holds nothing), whether
-- the grant is final (less than the rounded request), and the micros it holds from money sources
-- (RULES.md "reserved_micros": buckets, credit lines and the ancestors' pools; never allowance units).
local function reserve(account, ancestors, service, unit, t, units, now)
  local want = charged(t, units)
  local holds = {}
  local allowance = 0
  local list = account.kinds == true and account.buckets or of_kind(account, unit)
  for i = 1, #list do
    if allowance == want then break end
    local bucket = list[i]
    local amount, till = bucket.amount, bucket['until']
    if bucket.kind == unit and amount > 0 and bucket.from <= now and (till == 0 or now < till)
        and (bucket.any_service or bucket.services[service]) then
      local need = want - allowance
      local take = amount < need and amount or need
      bucket.amount, bucket.dirty = amount - take, true
      holds[#holds + 1] = {src = 'u', bucket = bucket, amount = take}
      allowance = allowance + take
    end
  end
  local rest = want - allowance
  local money_units = rest
  local need = cost(t, rest)
  local final = false
  if need > 0 then
    local sources = available(account, ancestors, now)
    if sources < need then
      -- affordable(sources): the largest charged quantity it pays for (need > 0, so price > 0).
      local price, per, block = t.price, t.per, t.block
      local whole = sources / price
      whole = whole - whole % 1
      local fraction = (sources - whole * price) * per / price
      fraction = fraction - fraction % 1
      local blocks = (whole * per + fraction) / block
      money_units = (blocks - blocks % 1) * block
      if money_units < t.first then money_units = 0 end
      need = cost(t, money_units)
      final = true
    end
  end
  -- hold_money takes all of `need`: it never exceeds available() (the sum of its sources).
  if need > 0 then hold_money(account, ancestors, need, now, holds) end
  local reservation = {units = allowance + money_units, allowance = allowance, tariff = t, change = false,
    holds = holds}
  if reservation.units == 0 then
    for i = 1, #holds do return_hold(holds[i], account, ancestors) end
    reservation.holds = {}
    need = 0
  end
  return reservation, final, need
end

-- RULES.md "Tariff change": reserve as `reserve` does, priced at the dearer of `t` and the price
-- after the change (so that no itemisation of the grant costs more than it holds); the
-- reservation keeps `t` and the change. `change_text` is "<at> <after price>", `now_text` now.
local function reserve_across(account, ancestors, service, unit, t, units, now, change_text, now_text)
  local at, price = match(change_text, '^(%d+) (%d+)$')
  local after_price = price + 0
  local dearer = t
  if after_price > t.price then
    dearer = tariff_of(price .. ' ' .. fmt(t.per) .. ' ' .. fmt(t.block) .. ' ' .. fmt(t.first))
  end
  local reservation, final, reserved = reserve(account, ancestors, service, unit, dearer, units, now)
  if reservation.units > 0 then
    reservation.tariff = t
    reservation.change = {at = at + 0, price = after_price, granted = now,
      text = ' t' .. at .. ':' .. price .. ':' .. now_text}
  end
  return reservation, final, reserved
end

-- Commits up to `used` units against the reservation; returns committed units and micros.
-- `before`: with a tariff change, how many of the used units, counted from the first, are priced
-- before it (priced_before). Whatever the reservation still holds afterwards is left in it (the
-- caller returns it).
local function commit(reservation, used, account, ancestors, before)
  local covered = used < reservation.units and used or reservation.units
  if covered <= 0 then return 0, 0 end
  local units_left = covered < reservation.allowance and covered or reservation.allowance
  local money = covered - units_left
  local micros
  local change = reservation.change
  if change then
    -- Allowances cover the first units used, so the priced units start after them.
    local money_before = before - units_left
    if money_before < 0 then money_before = 0 elseif money_before > money then money_before = money end
    micros = cost_across(reservation.tariff, money_before, money - money_before, change.price)
  else
    micros = cost(reservation.tariff, money)
  end
  local micros_left = micros
  local holds = reservation.holds
  for i = 1, #holds do
    local hold = holds[i]
    local amount = hold.amount
    if hold.src == 'u' then
      local take = amount < units_left and amount or units_left
      if take > 0 then commit_hold(hold, take, account, ancestors) end
      units_left = units_left - take
    else
      local take = amount < micros_left and amount or micros_left
      if take > 0 then commit_hold(hold, take, account, ancestors) end
      micros_left = micros_left - take
    end
  end
  if micros_left ~= 0 or units_left ~= 0 then
    error('INVARIANT commit exceeds holds')
  end
  account.cm, account.dirty_cm = account.cm + micros, true
  return covered, micros
end

-- RULES.md "Tariff change": how many of `used` units committed against `reservation`, counted
-- from the first, are priced before its tariff change (nil without one). `split` is the client's
-- itemisation "before after indeterminate" ('' for none); units straddling the change are priced
-- at the dearer side. Not itemised: reported by the change, all before; seconds, used
-- continuously from the grant (RFC 4006 section 5.1.1), before up to the change; else
-- indeterminate.
local function priced_before(reservation, used, split, unit, now)
  local change = reservation.change
  if not change then return nil end
  local before_dearer = reservation.tariff.price >= change.price
  if split ~= '' then
    local before, _, straddling = match(split, '^(%d+) (%d+) (%d+)$')
    return before + (before_dearer and straddling + 0 or 0)
  end
  if now <= change.at then return used end
  if unit == 'seconds' then return change.at - change.granted end
  return before_dearer and used or 0
end

-- Gives back everything the reservation holds (its holds stay, emptied).
local function return_reservation(reservation, account, ancestors)
  local holds = reservation.holds
  for i = 1, #holds do return_hold(holds[i], account, ancestors) end
end
