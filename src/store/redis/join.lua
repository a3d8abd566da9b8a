-- Join.
-- KEYS: 1 room hash, 2 log, 3 users, 4 holders, 5 the holder's node index,
--       6 retry index
-- ARGV: 1 user, 2 username, 3 holder field '<conn>:<node>', 4 granted '1'|'0',
--       5 '1' with since | '0', 6 since seq, 7 '1' with since epoch | '0',
--       8 since epoch, 9 history_limit, 10 channel, 11 node index member
--       '<conn>:<room>'
-- Returns {'N'}, {'F'}, or {'J', first_of_user 1|0, recovered -1|0|1,
-- {name, description, kind, created_at, created_by, epoch},
-- member_count, {user, '<holders>:<username>', ...}, {entries...},
-- last_seq, presence seq}.

local room, log, users, holders = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user, username, h = ARGV[1], ARGV[2], ARGV[3]

local f = room_fields(room, 'seq', 'awaiting_creator')
-- A room whose creator has not joined it yet is not there to others.
if not f[6] or (f[8] and f[5] ~= user) then
    return { 'N' }
end
local last = int(f[7] or '0', 'room seq')
local since, since_epoch
if ARGV[5] == '1' then
    since = int(ARGV[6], 'since')
    since_epoch = false
    if ARGV[7] == '1' then
        since_epoch = ARGV[8]
    end
end
-- The history is cut to HISTORY_LIMIT first, whatever the answer.
trim(log, KEYS[6], int(ARGV[9], 'history_limit'))
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
    end
end
redis.call('HDEL', room, 'empty_since', 'awaiting_creator')
local members = redis.call('HLEN', users)
if first == 1 then
    redis.call('PUBLISH', ARGV[10], presence_event(room, true, members, user, username))
end

local entries
local recovered = -1
if since then
    local ok
    ok, entries = recovery(log, last, f[6], since, since_epoch)
    recovered = flag(ok)
else
    entries = redis.call('LRANGE', log, 0, -1)
end

return { 'J', first, recovered, record_of(f), members,
    redis.call('HGETALL', users), entries, last,
    int(redis.call('HGET', room, 'pseq') or '0', 'presence seq') }
