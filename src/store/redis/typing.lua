-- Typing: nothing stored, one event, from a connection in the room.
-- KEYS: 1 holders
-- ARGV: 1 channel, 2 the event, 3 user, 4 holder field '<conn>:<node>'
-- Returns {'T'} or {'G'} (not in the room: nothing published).
if redis.call('HGET', KEYS[1], ARGV[4]) ~= ARGV[3] then
    return { 'G' }
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return { 'T' }
