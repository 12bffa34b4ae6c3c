-- ack.lua: acknowledge usage records stored elsewhere (the spool): drop them from the outbox.
--
-- KEYS: 1 outbox list of the hierarchy.
-- ARGV: 1 how many records were read from the head, 2 the id of the last of them.
-- Returns: how many records were removed.
-- Invariants: only records up to and including that id are removed, so an acknowledgement that
--       is retried, or that races another writer's, never drops a record that was not stored.

local outbox, count, last_id = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local head = redis.call('LRANGE', outbox, 0, count - 1)
for index = #head, 1, -1 do
  local ok, record = pcall(cjson.decode, head[index])
  if ok and record.id == last_id then
    redis.call('LTRIM', outbox, index, -1)
    return index
  end
end
return 0
