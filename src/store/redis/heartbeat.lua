-- Heartbeat: sweep every node whose lease ran out before now (in id
-- order; the renewing node too, if its own ran out), each of its holders
-- leaving its room as a Leave would (by room, then user, then connection
-- number: the order of the memory store's index); then renew the node's
-- lease.
-- Touches the rooms of the swept holders, which are not in KEYS: this
-- script assumes one Redis (or a primary with replicas), not a Cluster.
-- KEYS: 1 nodes (sorted set node -> lease expiry)
-- ARGV: 1 node, 2 now_ms, 3 lease expiry, 4 key prefix
-- Returns {'S', {node...}, lapsed 1|0}: lapsed when the node's own lease
-- ran out or was not there (swept by another node, or never renewed).

local nodes, node, now, prefix = KEYS[1], ARGV[1], ARGV[2], ARGV[4]
local had = redis.call('ZSCORE', nodes, node)
local lapsed = (not had) or int(had, 'lease') < int(now, 'now')
local gone = redis.call('ZRANGEBYSCORE', nodes, '-inf', '(' .. now)
table.sort(gone, bytes_lt)

for _, dead in ipairs(gone) do
    local index = prefix .. ':node:' .. dead .. ':held'
    local held = {}
    for _, m in ipairs(redis.call('SMEMBERS', index)) do
        local conn, id = split1(m)
        local room = room_key(prefix, id)
        local h = conn .. ':' .. dead
        -- Who holds it (nobody: the room or the holder is gone already).
        local user = redis.call('HGET', room .. ':holders', h)
        if user and redis.call('EXISTS', room) == 1 then
            held[#held + 1] = { id, user, conn, room, h }
        end
    end
    table.sort(held, function(a, b)
        if a[1] ~= b[1] then
            return bytes_lt(a[1], b[1])
        end
        if a[2] ~= b[2] then
            return bytes_lt(a[2], b[2])
        end
        return digits_lt(a[3], b[3])
    end)
    for _, x in ipairs(held) do
        local room = x[4]
        take_out(room, room .. ':users', room .. ':holders', channel_key(prefix, x[1]), x[2], x[5], now)
    end
    redis.call('DEL', index)
    redis.call('ZREM', nodes, dead)
end
redis.call('ZADD', nodes, ARGV[3], node)
return { 'S', gone, flag(lapsed) }
