-- Leave.
-- KEYS: 1 room hash, 2 users, 3 holders, 4 the holder's node index
-- ARGV: 1 holder field '<conn>:<node>', 2 node index member '<conn>:<room>',
--       3 now_ms, 4 channel
-- Returns {'N'} or {'L', last_of_user 1|0, member_count}.

redis.call('SREM', KEYS[4], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
    return { 'N' }
end
local _, last, members = take_out(KEYS[1], KEYS[2], KEYS[3], ARGV[4], ARGV[1], ARGV[3])
local l = 0
if last then
    l = 1
end
return { 'L', l, members }
