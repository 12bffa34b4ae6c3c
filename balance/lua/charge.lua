-- charge.lua: all balance work of one credit-control request, atomically (RULES.md "A charge request").
--
-- KEYS: 1 session hash, 2 account hash, 3 parent account hash (the account's own key again when it
--       has no parent), 4 expiry zset of the hierarchy, 5 outbox list of the hierarchy, then the
--       hashes of the ancestors above the parent, grandparent first, up to the root (none for a
--       root or a child of the root); then, on a single Redis only, the supervisor's and the spool
--       writer's work-list shards of the hierarchy (balance/work_lists.py), which the script marks
--       itself after an "ok" (a replay's included); on a Redis Cluster they live in other slots,
--       are not sent, and the store marks them with commands of their own.
-- ARGV: 1 account id, 2 session id, 3 request number, 4 now (epoch s), 5 the session's expiry if
--       it stays open (epoch s: now + validity), 6 terminate 0|1, 7 event 0|1, 8 tombstone
--       lifetime (s), 9 the ancestors' ids, parent first, root last, separated by spaces ('' for
--       none: balance/store.py knows the chain, lib.lua load_ancestors checks it), 10 the session id as the body of a JSON string
--       ('' when that is the session id itself), 11 deadline (epoch ms, Redis's clock: past it the
--       caller has given up, see below), then per item 10 fields: rating group, service
--       identifier ('' for none), service, unit (seconds|octets|events), used units ('all': every
--       unit the item's reservation granted, RULES.md "Refused usage"), requested units, release
--       0|1, tariff "price_micros per_units block_units first_units" (lib.lua tariff_of), the
--       new reservation's tariff change "<at epoch s> <after price micros>" ('' for none), the
--       used units as the client itemised them about the change of the
--       reservation they are committed against, "<before> <after> <indeterminate>" ('' for not
--       itemised): RULES.md "Tariff change". The item's reservation is the session field
--       'g:<service key>' and its usage record's id ends in the service key: the rating group,
--       or '<rating group>/<service identifier>' (balance/keys.py service_key).
--       Numbers are decimal integers (balance/store.py); some are copied into what is stored as sent.
--       A usage record says where its money came from (RULES.md "Where money came from"): "line"
--       (own credit line) and "pools" (per ancestor level drawn on), absent when none.
-- Returns: "<replayed 0|1> <outcome> <balance micros> <opened 0|1> <records> <items>" followed by
--       "<rating group> <outcome> <granted> <committed units> <committed micros> <final 0|1>
--       <reserved micros>" per item; reserved micros: what the item's new reservation holds from
--       money sources (RULES.md "reserved_micros"), 0 without one or for allowance units only.
--       The reply is stored for replays as it is, so a replay reports the same reserved micros.
-- Invariants: RULES.md, checked on every account touched before anything is written; a replayed
--       (session, request number) returns the stored reply and writes nothing.
-- Deadline: a call that Redis runs after ARGV[11] (read from Redis's own TIME) returns
--       "0 expired 0 0 0 0" and writes nothing: the store stopped waiting for it and its caller
--       answered 3004, so applying it would charge for a service refused (RULES.md "Deadlines").
--       A replay is answered first, so a late retransmission still learns what was applied.

local session_key, account_key, expiry_key, outbox_key = KEYS[1], KEYS[2], KEYS[4], KEYS[5]
local account_id, session_id = ARGV[1], ARGV[2]
local number, now = ARGV[3] + 0, ARGV[4] + 0 -- ARGV[5], the expiry, goes to ZADD as is
local terminate, event = ARGV[6] == '1', ARGV[7] == '1'
local ancestor_ids = ARGV[9] -- ARGV[8], the tombstone lifetime, goes to EXPIRE as is
local item_count = (#ARGV - 11) / 10
if item_count % 1 ~= 0 then return redis.error_reply('ARGV ' .. #ARGV .. ' arguments: not 11 + 10 per item') end

-- The work-list marks when their keys follow the ancestors' (KEYS above): the root on the
-- supervisor's list by the session's expiry (ZADD LT: the earliest look stays) when a session
-- opened, on the spool writer's when usage records were written; both idempotent.
local function mark_work(opened, recorded)
  local above = 0
  for _ in gmatch(ancestor_ids, '%S+') do above = above + 1 end
  local first = 5 + (above > 1 and above - 1 or 0) + 1
  local sessions_key, outboxes_key = KEYS[first], KEYS[first + 1]
  if outboxes_key == nil then return end
  local root = match(ancestor_ids, '(%S+)$') or account_id
  if opened then call('ZADD', sessions_key, 'LT', ARGV[5], root) end
  if recorded then call('SADD', outboxes_key, root) end
end

local account = load_account(account_key, account_id)
if account == nil then return '0 unknown_account 0 0 0 0' end
if account.par ~= parent_of(ancestor_ids) then
  return redis.error_reply('HIERARCHY ' .. account_id .. ' has parent ' .. account.par)
end

-- The session's stored state: a, n, r, c and one g:<rating group> field per reservation, read
-- straight from the reply (the reservations are decoded once the request is accepted). Its expiry
-- is its score in the expiry zset, not a field.
local stored = call('HGETALL', session_key)
local last, owner, last_reply, closed, stored_reservations = nil, nil, nil, false, nil
for i = 1, #stored, 2 do
  local field = stored[i]
  if field == 'n' then
    last = stored[i + 1] + 0
  elseif field == 'a' then
    owner = stored[i + 1]
  elseif field == 'r' then
    last_reply = stored[i + 1]
  elseif field == 'c' then
    closed = stored[i + 1] == '1'
  elseif field == 'x' then -- an expiry field written by earlier versions: the zset's score now
  elseif byte(field, 1) == 103 and byte(field, 2) == 58 then -- 'g:'
    stored_reservations = stored_reservations or {}
    stored_reservations[#stored_reservations + 1] = i
  end
end
local exists = last ~= nil
if exists then
  if number == last and owner == account_id then
    local outcome, opened, records = match(last_reply, '^(%S+) %S+ (%S+) (%S+)')
    if outcome == 'ok' then mark_work(opened == '1', records ~= '0') end
    return '1 ' .. last_reply
  end
  if number < last then return '0 stale_request 0 0 0 0' end
  if closed or owner ~= account_id then return '0 unknown_session 0 0 0 0' end
elseif number ~= 0 and not event then
  return '0 unknown_session 0 0 0 0'
end
if past_deadline(ARGV[11]) then return '0 expired 0 0 0 0' end
local ancestors, wrong = load_ancestors(ancestor_ids, KEYS, 3, 6)
if ancestors == nil then return redis.error_reply(wrong) end
-- RULES.md "Effective status": a node's status holds for every account under it.
local status = effective_status(account, ancestors)
local closed_for_good = status == 'barred' or status == 'terminated'
if (event and status ~= 'active') or (not exists and closed_for_good) then return '0 account_blocked 0 0 0 0' end

-- Reservations by field; only those made by this request are encoded and written back.
local reservations, made = {}, nil
if stored_reservations ~= nil then
  for _, i in ipairs(stored_reservations) do
    reservations[stored[i]] = decode_reservation(stored[i + 1], account, ancestors)
  end
end

local closing = terminate or event
-- The items' answers and usage records, as text: one item (the usual request) makes no table.
local results, record_count, records = nil, 0, nil
local refused_count = 0 -- items refused for lack of funds: if all are, a new session stays unopened
local session_json = ARGV[10] ~= '' and ARGV[10] or session_id -- in usage records
local position = 12
for _ = 1, item_count do
  local rating_group, identifier = ARGV[position], ARGV[position + 1]
  local service, unit = ARGV[position + 2], ARGV[position + 3]
  local service_key = identifier == '' and rating_group or (rating_group .. '/' .. identifier)
  local field = 'g:' .. service_key
  local existing = reservations[field]
  local used_text, requested = ARGV[position + 4], ARGV[position + 5] + 0
  if used_text == 'all' then -- RULES.md "Refused usage": every unit the reservation granted
    used_text = existing ~= nil and fmt(existing.units) or '0'
  end
  local used = used_text + 0
  local release = ARGV[position + 6] == '1'
  local tariff = tariff_of(ARGV[position + 7])
  local outcome, granted, final = 'ok', 0, false
  local committed_units, committed_micros = 0, 0
  drawn = false -- lib.lua: what this item's commits draw from other than own buckets

  if used > 0 then
    if event then
      -- An event never draws on a session's quota: a reservation of its rating group goes back first.
      if existing ~= nil then return_reservation(existing, account, ancestors) end
      local direct = reserve(account, ancestors, service, unit, tariff, used, now)
      if direct.units < used then
        outcome = 'insufficient_funds'
      else
        committed_units, committed_micros = commit(direct, used, account, ancestors)
      end
      return_reservation(direct, account, ancestors)
    else
      if existing ~= nil then
        local before = priced_before(existing, used, ARGV[position + 9], unit, now)
        committed_units, committed_micros = commit(existing, used, account, ancestors, before)
      end
      local excess = used - committed_units
      if excess > 0 then
        local direct = reserve(account, ancestors, service, unit, tariff, excess, now)
        local units, micros = commit(direct, excess, account, ancestors)
        return_reservation(direct, account, ancestors)
        committed_units, committed_micros = committed_units + units, committed_micros + micros
      end
    end
  end
  if existing ~= nil then
    return_reservation(existing, account, ancestors)
    reservations[field] = nil
  end
  local granted_text, reserved_text = '0', '0'
  if requested > 0 and not release and not closing then
    if status ~= 'active' then
      outcome = 'account_blocked'
    else
      local change_text = ARGV[position + 8]
      local reservation, is_final, reserved
      if change_text == '' then
        reservation, is_final, reserved = reserve(account, ancestors, service, unit, tariff, requested, now)
      else
        reservation, is_final, reserved = reserve_across(account, ancestors, service, unit, tariff, requested, now,
          change_text, ARGV[4])
      end
      granted = reservation.units
      if granted == 0 then
        outcome = 'insufficient_funds'
      else
        if is_final then outcome, final = 'partial', true end
        -- The numbers as the caller sent them, where they are the ones to store: no formatting.
        granted_text = granted == requested and ARGV[position + 5] or fmt(granted)
        reserved_text = fmt(reserved)
        reservations[field] = reservation
        made = made or {}
        made[#made + 1] = field
        made[#made + 1] = granted_text
      end
    end
  end
  if outcome == 'insufficient_funds' then refused_count = refused_count + 1 end
  local units_text = committed_units == used and used_text or fmt(committed_units)
  local micros_text = fmt(committed_micros)
  if committed_units > 0 then
    -- The usage record as JSON, written out by hand (cjson costs a table and a number format per
    -- field). Only the session id can hold characters JSON must escape (balance/store.py sends
    -- it escaped in ARGV[10] then); the account id, service and unit are plain
    -- (balance/validation.py), the numbers are integers.
    local record = '{"id":"' .. session_json .. '|' .. ARGV[3] .. '|' .. service_key .. '","account":"'
      .. account_id .. '","session":"' .. session_json .. '","number":' .. ARGV[3] .. ',"rating_group":'
      .. rating_group .. ',"service_identifier":' .. (identifier == '' and 'null' or identifier)
      .. ',"service":"' .. service .. '","unit":"' .. unit .. '","units":' .. units_text
      .. ',"micros":' .. micros_text .. ',"payment":"' .. account.pay .. '","at":' .. ARGV[4]
      .. (drawn and drawn_json(drawn) or '') .. '}'
    record_count = record_count + 1
    if record_count == 1 then records = record else
      if record_count == 2 then records = {records} end
      records[record_count] = record
    end
  end
  local result = rating_group .. ' ' .. outcome .. ' ' .. granted_text .. ' ' .. units_text .. ' ' .. micros_text
    .. (final and ' 1 ' or ' 0 ') .. reserved_text
  results = results and (results .. ' ' .. result) or result
  position = position + 10
end

if closing then
  for field, reservation in pairs(reservations) do
    return_reservation(reservation, account, ancestors)
    reservations[field] = nil
  end
end

-- Every change is known: write it if it is consistent.
local problem = save_checked(account, ancestors)
if problem ~= nil then return problem end
-- RULES.md "unopened": a first request whose every item was refused for lack of funds (its answer
-- is 4012) leaves no session behind, so later requests of that session id are unknown_session.
local unopened = not exists and not closing and item_count > 0 and refused_count == item_count
  and record_count == 0
local opened = (not exists and not closing and not unopened) and ' 1 ' or ' 0 '
local reply = 'ok ' .. fmt(available(account, ancestors, now)) .. opened .. fmt(record_count) .. ' ' .. fmt(item_count)
if results ~= nil then reply = reply .. ' ' .. results end
local member = account_id .. '|' .. session_id
if closing then
  write_tombstone(session_key, account_id, ARGV[3], reply, ARGV[8])
  if exists then call('ZREM', expiry_key, member) end
elseif not unopened then
  -- A reservation no item touched is stored as it was: only new ones are encoded; one a request
  -- ended is deleted.
  if stored_reservations ~= nil then
    local gone = nil
    for j = 1, #stored_reservations do
      local field = stored[stored_reservations[j]]
      if reservations[field] == nil then
        gone = gone or {}
        gone[#gone + 1] = field
      end
    end
    if gone ~= nil then call('HDEL', session_key, unpack(gone)) end
  end
  if made ~= nil and #made == 2 and exists then -- the usual request: one reservation made again
    call('HSET', session_key, 'n', ARGV[3], 'r', reply, made[1], encode_reservation(reservations[made[1]], made[2]))
  else
    local fields = {'n', ARGV[3], 'r', reply, false, false, false, false}
    local count = 4
    if not exists then
      fields[5], fields[6] = 'a', account_id
      count = 6
    end
    if made ~= nil then
      for i = 1, #made, 2 do
        local field = made[i]
        fields[count + 1], fields[count + 2] = field, encode_reservation(reservations[field], made[i + 1])
        count = count + 2
      end
    end
    call('HSET', session_key, unpack(fields, 1, count))
  end
  call('ZADD', expiry_key, ARGV[5], member)
end
if record_count == 1 then
  call('RPUSH', outbox_key, records)
elseif record_count > 1 then
  call('RPUSH', outbox_key, unpack(records))
end
mark_work(opened == ' 1 ', record_count > 0)
return '0 ' .. reply
