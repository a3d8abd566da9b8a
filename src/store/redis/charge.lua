-- Charge.
-- KEYS: 1 the user's bucket
-- ARGV: 1 capacity, 2 window_ms, 3 now_ms, 4 bucket ttl ms
-- Returns {'C'} or {'R', missing units}.

local missing = charge(KEYS[1], int(ARGV[1], 'capacity'), int(ARGV[2], 'window'), int(ARGV[3], 'now'), ARGV[4])
if missing then
    return { 'R', fmt(missing) }
end
return { 'C' }
