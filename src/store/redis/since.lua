-- Since: what a node that saw a seq gap reads.
-- KEYS: 1 room hash, 2 log, 3 retry index, 4 users
-- ARGV: 1 since seq, 2 '1' with since epoch | '0', 3 since epoch,
--       4 history_limit
-- Returns {'N'} or {'R', epoch, recovered 1|0, {entries...}, last_seq,
-- {users hash...}, presence seq}.

local f = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if not f[1] then
    return { 'N' }
end
local last = int(f[2] or '0', 'room seq')
local since = int(ARGV[1], 'since')
local since_epoch = false
if ARGV[2] == '1' then
    since_epoch = ARGV[3]
end
trim(KEYS[2], KEYS[3], int(ARGV[4], 'history_limit'))
local ok, entries = recovery(KEYS[2], last, f[1], since, since_epoch)
return { 'R', f[1], flag(ok), entries, last, redis.call('HGETALL', KEYS[4]),
    int(redis.call('HGET', KEYS[1], 'pseq') or '0', 'presence seq') }
