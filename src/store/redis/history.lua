-- History.
-- KEYS: 1 room hash, 2 log, 3 retry index
-- ARGV: 1 '1' with before_seq | '0', 2 before_seq, 3 limit, 4 history_limit
-- Returns {'N'} or {'H', has_more 1|0, {entries...}}: the newest `limit`
-- (at least 1) retained entries with seq < before_seq, oldest first.

if redis.call('EXISTS', KEYS[1]) == 0 then
    return { 'N' }
end
trim(KEYS[2], KEYS[3], int(ARGV[4], 'history_limit'))
local len = redis.call('LLEN', KEYS[2])
if len == 0 then
    return { 'H', 0, {} }
end
local stop = len
if ARGV[1] == '1' then
    local first = entry_seq(redis.call('LINDEX', KEYS[2], 0))
    stop = math.min(len, math.max(0, int(ARGV[2], 'before_seq') - first))
end
local start = math.max(0, stop - math.max(1, int(ARGV[3], 'limit')))
local entries = {}
if stop > start then
    entries = redis.call('LRANGE', KEYS[2], start, stop - 1)
end
local more = 0
if start > 0 then
    more = 1
end
return { 'H', more, entries }
