-- Leave.
-- KEYS: 1 room hash, 2 users, 3 holders, 4 the holder's node index
-- ARGV: 1 user, 2 holder field '<conn>:<node>', 3 node index member
--       '<conn>:<room>', 4 now_ms, 5 channel
-- Returns {'N'} or {'L', last_of_user 1|0, member_count}.

if redis.call('EXISTS', KEYS[1]) == 0 then
    return { 'N' }
end
-- The node's index keeps a holder that is in for another user (take_out
-- leaves it in): a sweep of the node must still find it.
if redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then
    redis.call('SREM', KEYS[4], ARGV[3])
end
local last, members = take_out(KEYS[1], KEYS[2], KEYS[3], ARGV[5], ARGV[1], ARGV[2], ARGV[4])
return { 'L', flag(last), members }
