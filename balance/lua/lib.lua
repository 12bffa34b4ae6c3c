-- lib.lua: the money rules of balance/RULES.md, shared by every operation script.
--
-- Loaded by balance/scripts.py in front of each operation file, so each registered script is
-- one self-contained chunk. Nothing here touches a key it was not given: the operation passes
-- key names it received in KEYS.
--
-- Numbers: Redis Lua numbers are doubles; every amount stays below 2^53 (RULES.md), so integer
-- arithmetic is exact. Integers are written back with fmt() ('%d': Lua 5.1 casts to a 64-bit long,
-- exact below 2^53 and far cheaper than the float formatter), never tostring(), which would
-- print 1e+15. Stored numbers and numeric ARGV are decimal integers written by these scripts or
-- by balance/store.py, so they are read with `text + 0` (one conversion; tonumber() makes two).
--
-- Discipline: an operation loads what it needs, computes every change in Lua tables, checks the
-- invariants, and only then writes. Redis does not roll back a script that fails half way, so a
-- failed assertion must happen before the first write.
--
-- Cost: this runs inside Redis's single thread on every charge, where each Lua operation (a
-- table, a string, a global lookup) costs a tenth of a microsecond or more, so the hot path is
-- written to do little: library functions are bound to locals once per call, an account's
-- buckets are parsed once and sorted into drawing order once per kind (amounts and validity are
-- checked as they are walked, so the order stays right while amounts change), and a stored
-- reservation keeps its tariff text. bench/balance.py measures it (INFO commandstats).

local format, byte, sub, find, match, gmatch = string.format, string.byte, string.sub, string.find, string.match,
  string.gmatch
local floor, ceil = math.floor, math.ceil
local concat, sort = table.concat, table.sort
local call, tonumber = redis.call, tonumber

local function fmt(n)
  if n == 0 then return '0' end -- the most common value, without a call to format
  return format('%d', n)
end

local function num(value)
  return tonumber(value) or 0
end

local INFINITY = 1e300
local NO_SERVICES = {} -- shared by every bucket open to any service; never written

-- ---------------------------------------------------------------------------------------------
-- tariff arithmetic (RULES.md "Units and arithmetic")

local function charged(t, units)
  if units <= 0 then return 0 end
  local block = t.block
  local c = ceil(units / block) * block
  if c < t.first then return t.first end
  return c
end

local function cost(t, units)
  local c = charged(t, units)
  local price, per = t.price, t.per
  if c == 0 or price == 0 then return 0 end
  local q = floor(c / per)
  local r = c - q * per
  return q * price + ceil(r * price / per)
end

-- The largest grant (a charged value) that `micros` pays for; nil means unlimited (price 0).
local function affordable(t, micros)
  local price = t.price
  if price == 0 then return nil end
  local whole = floor(micros / price)
  local rest = micros - whole * price
  local units = whole * t.per + floor(rest * t.per / price)
  units = floor(units / t.block) * t.block
  if units < t.first then return 0 end
  return units
end

-- ---------------------------------------------------------------------------------------------
-- accounts

local function parse_meta(bucket, meta)
  local kind, from, till, priority, services = match(meta, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  bucket.kind = kind
  -- '0' (no start, no end, no priority) is by far the most common value: no conversion.
  if from ~= '0' then bucket.from = tonumber(from) or 0 end
  if till ~= '0' then bucket['until'] = tonumber(till) or 0 end
  if priority ~= '0' then bucket.priority = tonumber(priority) or 0 end
  if services == '' then return end
  if not find(services, ',', 1, true) then
    bucket.services = {[services] = true}
    bucket.any_service = false
    return
  end
  for service in gmatch(services, '[^,]+') do
    if bucket.any_service then
      bucket.services = {}
      bucket.any_service = false
    end
    bucket.services[service] = true
  end
end

-- A bucket table with every field it will get, so filling it in never grows it.
local function new_bucket(bucket_id)
  return {id = bucket_id, amount = 0, kind = false, from = 0, ['until'] = 0, priority = 0,
    services = NO_SERVICES, any_service = true, dirty = false}
end

-- Returns the account as a table, or nil if the key does not exist. Fields of the hash other
-- than buckets ('q:<id>' amount, 'm:<id>' metadata) land on the table under their own names.
local function load_account(key, id)
  local flat = call('HGETALL', key)
  local count = #flat
  if count == 0 then return nil end
  local buckets, by_id = {}, {}
  local account = {key = key, id = id, buckets = buckets, by_id = by_id, kinds = {}, dirty = {},
    cr = 0, db = 0, cm = 0, hd = 0, lh = 0, ub = 0, pu = 0, lim = 0, cap = 0,
    pay = false, st = false, par = '', cur = false}
  local in_order, last_id = true, -INFINITY
  local bucket, bucket_text = nil, nil -- the last bucket seen: its 'q:' and 'm:' fields sit together
  for i = 1, count, 2 do
    local field = flat[i]
    local first = byte(field, 1)
    -- 113 is 'q', 109 'm', 58 ':'.
    if byte(field, 2) == 58 and (first == 113 or first == 109) then
      local text = sub(field, 3)
      if text ~= bucket_text then
        local bucket_id = text + 0
        bucket, bucket_text = by_id[bucket_id], text
        if bucket == nil then
          bucket = new_bucket(bucket_id)
          by_id[bucket_id] = bucket
          buckets[#buckets + 1] = bucket
          if bucket_id < last_id then in_order = false end
          last_id = bucket_id
        end
      end
      if first == 113 then bucket.amount = flat[i + 1] + 0 else parse_meta(bucket, flat[i + 1]) end
    else
      account[field] = flat[i + 1]
    end
  end
  if not in_order then sort(buckets, function(a, b) return a.id < b.id end) end
  account.cr, account.db, account.cm = (account.cr or 0) + 0, (account.db or 0) + 0, (account.cm or 0) + 0
  account.hd, account.lh, account.ub = (account.hd or 0) + 0, (account.lh or 0) + 0, (account.ub or 0) + 0
  account.pu, account.lim, account.cap = (account.pu or 0) + 0, (account.lim or 0) + 0, (account.cap or 0) + 0
  return account
end

-- A bucket created by an operation (top-up, refund): kept in id order like the loaded ones.
local function attach_bucket(account, bucket)
  account.by_id[bucket.id] = bucket
  account.buckets[#account.buckets + 1] = bucket
  account.kinds = {}
end

local function bucket_is_money(bucket)
  local kind = bucket.kind
  return kind == 'main' or kind == 'bonus'
end

local function usable(bucket, now)
  local till = bucket['until']
  return bucket.amount > 0 and bucket.from <= now and (till == 0 or now < till)
end

local function drawing_order(a, b)
  local ua = a['until'] == 0 and INFINITY or a['until']
  local ub = b['until'] == 0 and INFINITY or b['until']
  if ua ~= ub then return ua < ub end
  if a.priority ~= b.priority then return a.priority < b.priority end
  return a.id < b.id
end

-- Every bucket of `kind` in drawing order, usable or not (callers check usable() as they walk
-- it: the order does not depend on amounts or on now, so one sort serves the whole call).
local function of_kind(account, kind)
  local list = account.kinds[kind]
  if list == nil then
    list = {}
    local buckets = account.buckets
    for i = 1, #buckets do
      if buckets[i].kind == kind then list[#list + 1] = buckets[i] end
    end
    if #list > 1 then sort(list, drawing_order) end
    account.kinds[kind] = list
  end
  return list
end

local function credit_line(account)
  if account.pay ~= 'postpaid' then return 0 end
  local free = account.lim - account.ub - account.lh
  if free < 0 then return 0 end
  return free
end

local function set_amount(account, bucket, amount)
  bucket.amount = amount
  bucket.dirty = true
end

local function add(account, counter, amount)
  account[counter] = account[counter] + amount
  account.dirty[counter] = true
end

local function usable_total(list, now)
  local total = 0
  for i = 1, #list do
    local bucket = list[i]
    if usable(bucket, now) then total = total + bucket.amount end
  end
  return total
end

local function money_in_buckets(account, now)
  return usable_total(of_kind(account, 'bonus'), now) + usable_total(of_kind(account, 'main'), now)
end

local function pool_room(child, parent, now)
  if parent == nil then return 0 end
  local room = child.cap - child.pu
  if room <= 0 then return 0 end
  local pool = money_in_buckets(parent, now) + credit_line(parent)
  if pool < room then return pool end
  return room
end

-- RULES.md "balance_micros": what a new reservation could draw now.
local function available(account, parent, now)
  return money_in_buckets(account, now) + credit_line(account) + pool_room(account, parent, now)
end

local function check_invariants(account)
  local money = 0
  local buckets = account.buckets
  for i = 1, #buckets do
    local bucket = buckets[i]
    if bucket.amount < 0 then
      return redis.error_reply('INVARIANT ' .. account.id .. ' bucket ' .. bucket.id .. ' below 0')
    end
    if bucket_is_money(bucket) then money = money + bucket.amount end
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
  local args, n = {}, 0
  local buckets = account.buckets
  for i = 1, #buckets do
    local bucket = buckets[i]
    if bucket.dirty then
      args[n + 1] = 'q:' .. bucket.id
      args[n + 2] = fmt(bucket.amount)
      n = n + 2
      bucket.dirty = false
    end
  end
  for field in pairs(account.dirty) do
    args[n + 1] = field
    args[n + 2] = fmt(account[field])
    n = n + 2
  end
  if n > 0 then call('HSET', account.key, unpack(args)) end
  account.dirty = {}
end

-- ---------------------------------------------------------------------------------------------
-- holds and reservations
--
-- A hold is {src, id, amount}: src 'u' allowance units of an own bucket, 'c' micros of an own
-- monetary bucket, 'C' the own credit line, 'p' a parent bucket, 'P' the parent credit line.

local function owner_of(hold, account, parent)
  if hold.src == 'p' or hold.src == 'P' then return parent end
  return account
end

-- Holds up to `left` micros from the usable buckets of `list` (in order); returns what is left.
local function hold_from_buckets(owner, list, src, holds, left, now)
  for i = 1, #list do
    if left == 0 then return 0 end
    local bucket = list[i]
    if usable(bucket, now) then
      local amount = bucket.amount
      local take = amount < left and amount or left
      set_amount(owner, bucket, amount - take)
      add(owner, 'hd', take)
      holds[#holds + 1] = {src = src, id = bucket.id, amount = take}
      left = left - take
    end
  end
  return left
end

local function hold_from_line(owner, src, holds, left)
  local line = credit_line(owner)
  local take = line < left and line or left
  if take > 0 then
    add(owner, 'lh', take)
    holds[#holds + 1] = {src = src, id = 0, amount = take}
    left = left - take
  end
  return left
end

-- Takes up to `want` micros from the money sources in drawing order; returns the holds.
local function hold_money(account, parent, want, now)
  local holds = {}
  local left = hold_from_buckets(account, of_kind(account, 'bonus'), 'c', holds, want, now)
  left = hold_from_buckets(account, of_kind(account, 'main'), 'c', holds, left, now)
  left = hold_from_line(account, 'C', holds, left)
  if left > 0 and parent ~= nil then
    local room = pool_room(account, parent, now)
    local pool_want = math.min(room, left)
    local pool_left = hold_from_buckets(parent, of_kind(parent, 'bonus'), 'p', holds, pool_want, now)
    pool_left = hold_from_buckets(parent, of_kind(parent, 'main'), 'p', holds, pool_left, now)
    pool_left = hold_from_line(parent, 'P', holds, pool_left)
    local taken = pool_want - pool_left
    add(account, 'pu', taken)
  end
  return holds
end

-- Takes `amount` out of one hold, releasing it from held / limit held (commit or return).
local function settle(hold, amount, account, parent)
  if amount <= 0 then return end
  local owner = owner_of(hold, account, parent)
  hold.amount = hold.amount - amount
  if hold.src == 'u' then
    return amount
  elseif hold.src == 'c' or hold.src == 'p' then
    add(owner, 'hd', -amount)
  else
    add(owner, 'lh', -amount)
  end
  return amount
end

local function commit_hold(hold, amount, account, parent)
  if amount <= 0 then return end
  local owner = owner_of(hold, account, parent)
  settle(hold, amount, account, parent)
  if hold.src == 'c' or hold.src == 'p' then
    add(owner, 'db', amount)
  elseif hold.src == 'C' or hold.src == 'P' then
    add(owner, 'ub', amount)
  end
end

local function return_hold(hold, account, parent)
  local amount = hold.amount
  if amount <= 0 then return end
  local owner = owner_of(hold, account, parent)
  settle(hold, amount, account, parent)
  if hold.src ~= 'C' and hold.src ~= 'P' then
    local bucket = owner.by_id[hold.id]
    set_amount(owner, bucket, bucket.amount + amount)
  end
  if hold.src == 'p' or hold.src == 'P' then add(account, 'pu', -amount) end
end

-- A reservation: {units, allowance, tariff, holds}. Serialised as space-separated fields:
-- "units allowance price per block first src:id:amount ...". A tariff may carry its four
-- numbers already as that text (`tariff.text`, from ARGV or from the stored reservation).
local function tariff_text(t)
  return t.text or concat({fmt(t.price), fmt(t.per), fmt(t.block), fmt(t.first)}, ' ')
end

local function encode_reservation(r)
  local parts = {fmt(r.units), fmt(r.allowance), tariff_text(r.tariff)}
  local holds = r.holds
  for i = 1, #holds do
    local hold = holds[i]
    if hold.amount > 0 then parts[#parts + 1] = hold.src .. ':' .. hold.id .. ':' .. fmt(hold.amount) end
  end
  return concat(parts, ' ')
end

-- The general reader: any whitespace, any number syntax tonumber() takes.
local function decode_reservation_words(text)
  local fields = {}
  for word in gmatch(text, '%S+') do fields[#fields + 1] = word end
  local r = {units = num(fields[1]), allowance = num(fields[2]), holds = {},
    tariff = {price = num(fields[3]), per = num(fields[4]), block = num(fields[5]), first = num(fields[6])}}
  for i = 7, #fields do
    local src, id, amount = match(fields[i], '^(%a):(%d+):(%d+)$')
    r.holds[#r.holds + 1] = {src = src, id = tonumber(id), amount = tonumber(amount)}
  end
  return r
end

local function decode_reservation(text)
  -- What encode_reservation writes, read with one match; anything else takes the general reader.
  local units, allowance, tariff, price, per, block, first, rest =
    match(text, '^(%d+) (%d+) ((%d+) (%d+) (%d+) (%d+))(.*)$')
  if units == nil then return decode_reservation_words(text) end
  local holds = {}
  local at, last = 1, #rest
  while at <= last do
    local _, stop, src, id, amount = find(rest, '^ (%a):(%d+):(%d+)', at)
    if stop == nil then return decode_reservation_words(text) end
    holds[#holds + 1] = {src = src, id = id + 0, amount = amount + 0}
    at = stop + 1
  end
  return {units = units + 0, allowance = allowance + 0, holds = holds,
    tariff = {price = price + 0, per = per + 0, block = block + 0, first = first + 0, text = tariff}}
end

-- RULES.md "Drawing order": reserve `units` (> 0) of `service`/`unit` at tariff `t`.
-- Returns the reservation (units 0 if nothing could be granted: then it holds nothing) and
-- whether the grant is final (less than the rounded request).
local function reserve(account, parent, service, unit, t, units, now)
  local want = charged(t, units)
  local holds = {}
  local allowance = 0
  local list = of_kind(account, unit)
  for i = 1, #list do
    if allowance == want then break end
    local bucket = list[i]
    if usable(bucket, now) and (bucket.any_service or bucket.services[service]) then
      local amount, need = bucket.amount, want - allowance
      local take = amount < need and amount or need
      set_amount(account, bucket, amount - take)
      holds[#holds + 1] = {src = 'u', id = bucket.id, amount = take}
      allowance = allowance + take
    end
  end
  local rest = want - allowance
  local money_units = rest
  local need = cost(t, rest)
  local final = false
  if need > 0 then
    local sources = available(account, parent, now)
    if sources < need then
      money_units = affordable(t, sources)
      need = cost(t, money_units)
      final = true
    end
  end
  if need > 0 then
    local money_holds = hold_money(account, parent, need, now)
    for i = 1, #money_holds do holds[#holds + 1] = money_holds[i] end
  end
  local reservation = {units = allowance + money_units, allowance = allowance, tariff = t, holds = holds}
  if reservation.units == 0 then
    for i = 1, #holds do return_hold(holds[i], account, parent) end
    reservation.holds = {}
  end
  return reservation, final
end

-- Commits up to `used` units against the reservation; returns committed units and micros.
-- Whatever the reservation still holds afterwards is left in it (the caller returns it).
local function commit(reservation, used, account, parent)
  local covered = math.min(used, reservation.units)
  if covered <= 0 then return 0, 0 end
  local units_left = math.min(covered, reservation.allowance)
  local micros = cost(reservation.tariff, covered - units_left)
  local micros_left = micros
  local holds = reservation.holds
  for i = 1, #holds do
    local hold = holds[i]
    if hold.src == 'u' then
      local take = math.min(hold.amount, units_left)
      settle(hold, take, account, parent)
      units_left = units_left - take
    else
      local take = math.min(hold.amount, micros_left)
      commit_hold(hold, take, account, parent)
      micros_left = micros_left - take
    end
  end
  if micros_left ~= 0 or units_left ~= 0 then
    error('INVARIANT commit exceeds holds')
  end
  add(account, 'cm', micros)
  return covered, micros
end

local function return_reservation(reservation, account, parent)
  local holds = reservation.holds
  for i = 1, #holds do return_hold(holds[i], account, parent) end
  reservation.holds = {}
end
