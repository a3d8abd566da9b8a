-- DeleteIfIdle.
-- KEYS: 1 room hash, 2 log, 3 retry index, 4 users, 5 holders, 6 rooms index
-- ARGV: 1 id, 2 '1' with a cutoff | '0' (now_ms < idle_ttl_ms: nothing has
--       been empty that long), 3 cutoff (now_ms - idle_ttl_ms), 4 channel,
--       5 key prefix (the creator's set is named by the room's creator)
-- Returns {'N'} (no such room), {'K'} (kept) or {'D'} (deleted).

local room = KEYS[1]
local f = redis.call('HMGET', room, 'epoch', 'created_by', 'empty_since')
if not f[1] then
    return { 'N' }
end
if not f[2] or not f[3] or ARGV[2] ~= '1' or redis.call('HLEN', KEYS[4]) > 0 then
    return { 'K' }
end
if int(f[3], 'empty_since') > int(ARGV[3], 'cutoff') then
    return { 'K' }
end
redis.call('DEL', room, KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('SREM', ARGV[5] .. ':creator:' .. f[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], 'D')
return { 'D' }
