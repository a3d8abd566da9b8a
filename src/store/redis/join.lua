-- Join.
-- KEYS: 1 room hash, 2 log, 3 users, 4 holders, 5 the holder's node index
-- ARGV: 1 user, 2 username, 3 holder field '<conn>:<node>', 4 granted '1'|'0',
--       5 '1' with since | '0', 6 since seq, 7 '1' with since epoch | '0',
--       8 since epoch, 9 now_ms, 10 channel, 11 node index member
--       '<conn>:<room>'
-- Returns {'N'}, {'F'}, or {'J', first_of_user 1|0, recovered -1|0|1,
-- {name, description, kind, created_at, created_by, epoch},
-- member_count, {user, '<holders>:<username>', ...}, {entries...}}.

local room, log, users, holders = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user, username, h = ARGV[1], ARGV[2], ARGV[3]

local f = redis.call('HMGET', room, 'name', 'description', 'kind', 'created_at', 'created_by', 'epoch', 'seq')
if not f[6] then
    return { 'N' }
end
if f[3] == 'private' and ARGV[4] ~= '1' and f[5] ~= user then
    return { 'F' }
end

local first = 0
if redis.call('HEXISTS', holders, h) == 0 then
    redis.call('HSET', holders, h, user)
    redis.call('SADD', KEYS[5], ARGV[11])
    local v = redis.call('HGET', users, user)
    if v then
        local count, name = presence(v)
        redis.call('HSET', users, user, fmt(count + 1) .. ':' .. name)
    else
        first = 1
        redis.call('HSET', users, user, '1:' .. username)
        redis.call('HDEL', room, 'empty_since')
        local members = redis.call('HLEN', users)
        redis.call('PUBLISH', ARGV[10], presence_event(true, members, user, username))
    end
end
local members = redis.call('HLEN', users)

local entries
local recovered = -1
if ARGV[5] == '1' then
    local since = int(ARGV[6], 'since')
    local last = int(f[7] or '0', 'room seq')
    local len = redis.call('LLEN', log)
    local first_retained = last + 1
    if len > 0 then
        first_retained = entry_seq(redis.call('LINDEX', log, 0))
    end
    local same_epoch = ARGV[7] ~= '1' or ARGV[8] == f[6]
    if same_epoch and since <= last and since + 1 >= first_retained then
        recovered = 1
    else
        recovered = 0
    end
    -- The retained messages after `since` (the log's seqs are consecutive).
    local start = math.max(0, since + 1 - first_retained)
    if start < len then
        entries = redis.call('LRANGE', log, start, -1)
    else
        entries = {}
    end
else
    entries = redis.call('LRANGE', log, 0, -1)
end

return { 'J', first, recovered, { f[1], f[2], f[3], f[4], f[5], f[6] }, members,
    redis.call('HGETALL', users), entries }
