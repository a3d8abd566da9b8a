-- Publish: refuse a sender's connection that is not in the room (swept
-- with its node), charge the sender's bucket, match a retry, give the next
-- seq, append, evict past the history limit (with the evicted messages'
-- retry keys), PUBLISH. One script, one round trip.
-- KEYS: 1 sender's bucket, 2 room hash, 3 log, 4 retry index, 5 holders
-- ARGV: 1 capacity, 2 window_ms, 3 now_ms, 4 bucket ttl ms, 5 retry key
--       ('' without clientMessageId; else '<user>\0<id>'), 6 draft head,
--       7 draft tail, 8 history_limit, 9 channel, 10 user, 11 holder field
--       '<conn>:<node>'
-- Returns {'G'}, {'R', missing units}, {'N'}, {'D', entry} or {'P', seq,
-- the room's presence change number}.

local room, log, retry = KEYS[2], KEYS[3], KEYS[4]
local epoch = redis.call('HGET', room, 'epoch')
if epoch and redis.call('HGET', KEYS[5], ARGV[11]) ~= ARGV[10] then
    return { 'G' }
end
local missing = charge(KEYS[1], int(ARGV[1], 'capacity'), int(ARGV[2], 'window'), int(ARGV[3], 'now'), ARGV[4])
if missing then
    return { 'R', fmt(missing) }
end
-- (A missing room answers after the charge, as it always did.)
if not epoch then
    return { 'N' }
end

local rk = ARGV[5]
if rk ~= '' then
    local seq = redis.call('HGET', retry, rk)
    if seq then
        local e = entry_at(log, int(seq, 'retry seq'))
        if e then
            return { 'D', e }
        end
        -- The index outlived its message (data lost): not a match.
        redis.call('HDEL', retry, rk)
    end
end

local seq = redis.call('HINCRBY', room, 'seq', 1)
local digits = fmt(seq)
local frame = ARGV[6] .. digits .. ARGV[7]
local len = redis.call('RPUSH', log, digits .. ':' .. #rk .. ':' .. rk .. frame)
if rk ~= '' then
    redis.call('HSET', retry, rk, digits)
end

trim(log, retry, int(ARGV[8], 'history_limit'), len)

local user = ARGV[10]
redis.call('PUBLISH', ARGV[9], 'M' .. digits .. ':' .. #epoch .. ':' .. epoch .. #user .. ':' .. user .. frame)
return { 'P', seq, int(redis.call('HGET', room, 'pseq') or '0', 'presence seq') }
