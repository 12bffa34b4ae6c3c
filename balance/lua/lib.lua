-- lib.lua: the money rules of balance/RULES.md, shared by every operation script.
--
-- Loaded by balance/scripts.py in front of each operation file, so each registered script is
-- one self-contained chunk. Nothing here touches a key it was not given: the operation passes
-- key names it received in KEYS.
--
-- Numbers: Redis Lua numbers are doubles; every amount stays below 2^53 (RULES.md), so integer
-- arithmetic is exact. Integers are written back with fmt() ('%.0f'), never tostring(), which
-- would print 1e+15.
--
-- Discipline: an operation loads what it needs, computes every change in Lua tables, checks the
-- invariants, and only then writes. Redis does not roll back a script that fails half way, so a
-- failed assertion must happen before the first write.

local function fmt(n)
  return string.format('%.0f', n)
end

local function num(value)
  return tonumber(value) or 0
end

local INFINITY = 1e300

-- ---------------------------------------------------------------------------------------------
-- tariff arithmetic (RULES.md "Units and arithmetic")

local function charged(t, units)
  if units <= 0 then return 0 end
  local c = math.ceil(units / t.block) * t.block
  if c < t.first then return t.first end
  return c
end

local function cost(t, units)
  local c = charged(t, units)
  if c == 0 or t.price == 0 then return 0 end
  local q = math.floor(c / t.per)
  local r = c - q * t.per
  return q * t.price + math.ceil(r * t.price / t.per)
end

-- The largest grant (a charged value) that `micros` pays for; nil means unlimited (price 0).
local function affordable(t, micros)
  if t.price == 0 then return nil end
  local whole = math.floor(micros / t.price)
  local rest = micros - whole * t.price
  local units = whole * t.per + math.floor(rest * t.per / t.price)
  units = math.floor(units / t.block) * t.block
  if units < t.first then return 0 end
  return units
end

-- ---------------------------------------------------------------------------------------------
-- accounts

local COUNTERS = {'cr', 'db', 'cm', 'hd', 'lh', 'ub', 'pu', 'lim', 'cap'}

local function parse_meta(bucket, meta)
  local kind, from, till, priority, services = string.match(meta, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  bucket.kind = kind
  bucket.from = num(from)
  bucket['until'] = num(till)
  bucket.priority = num(priority)
  bucket.services = {}
  bucket.any_service = true
  for service in string.gmatch(services, '[^,]+') do
    bucket.services[service] = true
    bucket.any_service = false
  end
end

-- Returns the account as a table, or nil if the key does not exist.
local function load_account(key, id)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local account = {key = key, id = id, f = {}, buckets = {}, by_id = {}, dirty = {}}
  for i = 1, #flat, 2 do
    local field, value = flat[i], flat[i + 1]
    local prefix = string.sub(field, 1, 2)
    if prefix == 'q:' or prefix == 'm:' then
      local bucket_id = tonumber(string.sub(field, 3))
      local bucket = account.by_id[bucket_id]
      if bucket == nil then
        bucket = {id = bucket_id, amount = 0}
        account.by_id[bucket_id] = bucket
        account.buckets[#account.buckets + 1] = bucket
      end
      if prefix == 'q:' then bucket.amount = num(value) else parse_meta(bucket, value) end
    else
      account.f[field] = value
    end
  end
  for _, name in ipairs(COUNTERS) do account[name] = num(account.f[name]) end
  account.pay = account.f.pay
  account.st = account.f.st
  account.par = account.f.par or ''
  account.cur = account.f.cur
  table.sort(account.buckets, function(a, b) return a.id < b.id end)
  return account
end

local function bucket_is_money(bucket)
  return bucket.kind == 'main' or bucket.kind == 'bonus'
end

local function usable(bucket, now)
  return bucket.amount > 0 and bucket.from <= now and (bucket['until'] == 0 or now < bucket['until'])
end

local function drawing_order(a, b)
  local ua = a['until'] == 0 and INFINITY or a['until']
  local ub = b['until'] == 0 and INFINITY or b['until']
  if ua ~= ub then return ua < ub end
  if a.priority ~= b.priority then return a.priority < b.priority end
  return a.id < b.id
end

-- Usable buckets of `kind` (and, for allowances, of `service`) in drawing order.
local function buckets_of(account, kind, service, now)
  local found = {}
  for _, bucket in ipairs(account.buckets) do
    if bucket.kind == kind and usable(bucket, now) and
        (service == nil or bucket.any_service or bucket.services[service]) then
      found[#found + 1] = bucket
    end
  end
  table.sort(found, drawing_order)
  return found
end

local function credit_line(account)
  if account.pay ~= 'postpaid' then return 0 end
  local free = account.lim - account.ub - account.lh
  if free < 0 then return 0 end
  return free
end

local function set_amount(account, bucket, amount)
  bucket.amount = amount
  account.dirty['q:' .. bucket.id] = true
end

local function add(account, counter, amount)
  account[counter] = account[counter] + amount
  account.dirty[counter] = true
end

local function money_in_buckets(account, now)
  local total = 0
  for _, kind in ipairs({'bonus', 'main'}) do
    for _, bucket in ipairs(buckets_of(account, kind, nil, now)) do total = total + bucket.amount end
  end
  return total
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
  for _, bucket in ipairs(account.buckets) do
    if bucket.amount < 0 then
      return redis.error_reply('INVARIANT ' .. account.id .. ' bucket ' .. bucket.id .. ' below 0')
    end
    if bucket_is_money(bucket) then money = money + bucket.amount end
  end
  for _, name in ipairs({'hd', 'lh', 'ub', 'pu'}) do
    if account[name] < 0 then return redis.error_reply('INVARIANT ' .. account.id .. ' ' .. name .. ' below 0') end
  end
  if account.cr - account.db ~= money + account.hd then
    return redis.error_reply('INVARIANT ' .. account.id .. ' credits - debits ~= money + held')
  end
  return nil
end

-- Writes the changed fields of the account (after the invariants held).
local function save_account(account)
  local args = {}
  for field in pairs(account.dirty) do
    args[#args + 1] = field
    if string.sub(field, 1, 2) == 'q:' then
      args[#args + 1] = fmt(account.by_id[tonumber(string.sub(field, 3))].amount)
    else
      args[#args + 1] = fmt(account[field])
    end
  end
  if #args > 0 then redis.call('HSET', account.key, unpack(args)) end
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

-- Takes up to `want` micros from the money sources in drawing order; returns the holds.
local function hold_money(account, parent, want, now)
  local holds = {}
  local left = want
  local function from_buckets(owner, src)
    for _, kind in ipairs({'bonus', 'main'}) do
      for _, bucket in ipairs(buckets_of(owner, kind, nil, now)) do
        if left == 0 then return end
        local take = math.min(bucket.amount, left)
        set_amount(owner, bucket, bucket.amount - take)
        add(owner, 'hd', take)
        holds[#holds + 1] = {src = src, id = bucket.id, amount = take}
        left = left - take
      end
    end
  end
  local function from_line(owner, src)
    local take = math.min(credit_line(owner), left)
    if take > 0 then
      add(owner, 'lh', take)
      holds[#holds + 1] = {src = src, id = 0, amount = take}
      left = left - take
    end
  end
  from_buckets(account, 'c')
  from_line(account, 'C')
  if left > 0 and parent ~= nil then
    local room = pool_room(account, parent, now)
    local pool_want = math.min(room, left)
    local before = left
    left = pool_want
    from_buckets(parent, 'p')
    from_line(parent, 'P')
    local taken = pool_want - left
    add(account, 'pu', taken)
    left = before - taken
  end
  return holds
end

-- Commits (consume = true) or returns (consume = false) `amount` of one hold.
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
-- "units allowance price per block first src:id:amount ...".
local function encode_reservation(r)
  local parts = {fmt(r.units), fmt(r.allowance), fmt(r.tariff.price), fmt(r.tariff.per),
    fmt(r.tariff.block), fmt(r.tariff.first)}
  for _, hold in ipairs(r.holds) do
    if hold.amount > 0 then parts[#parts + 1] = hold.src .. ':' .. hold.id .. ':' .. fmt(hold.amount) end
  end
  return table.concat(parts, ' ')
end

local function decode_reservation(text)
  local fields = {}
  for word in string.gmatch(text, '%S+') do fields[#fields + 1] = word end
  local r = {units = num(fields[1]), allowance = num(fields[2]), holds = {},
    tariff = {price = num(fields[3]), per = num(fields[4]), block = num(fields[5]), first = num(fields[6])}}
  for i = 7, #fields do
    local src, id, amount = string.match(fields[i], '^(%a):(%d+):(%d+)$')
    r.holds[#r.holds + 1] = {src = src, id = tonumber(id), amount = tonumber(amount)}
  end
  return r
end

-- RULES.md "Drawing order": reserve `units` (> 0) of `service`/`unit` at tariff `t`.
-- Returns the reservation (units 0 if nothing could be granted: then it holds nothing) and
-- whether the grant is final (less than the rounded request).
local function reserve(account, parent, service, unit, t, units, now)
  local want = charged(t, units)
  local holds = {}
  local allowance = 0
  for _, bucket in ipairs(buckets_of(account, unit, service, now)) do
    if allowance == want then break end
    local take = math.min(bucket.amount, want - allowance)
    set_amount(account, bucket, bucket.amount - take)
    holds[#holds + 1] = {src = 'u', id = bucket.id, amount = take}
    allowance = allowance + take
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
    for _, hold in ipairs(hold_money(account, parent, need, now)) do holds[#holds + 1] = hold end
  end
  local reservation = {units = allowance + money_units, allowance = allowance, tariff = t, holds = holds}
  if reservation.units == 0 then
    for _, hold in ipairs(holds) do return_hold(hold, account, parent) end
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
  for _, hold in ipairs(reservation.holds) do
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
  for _, hold in ipairs(reservation.holds) do return_hold(hold, account, parent) end
  reservation.holds = {}
end
