-- Heartbeat: renew a node's lease, then sweep every node whose lease ran
-- out before now (in id order), each of its holders leaving its room as a
-- Leave would (rooms in id order, then connections in number order).
-- Touches the rooms of the swept holders, which are not in KEYS: this
-- script assumes one Redis (or a primary with replicas), not a Cluster.
-- KEYS: 1 nodes (sorted set node -> lease expiry)
-- ARGV: 1 node, 2 now_ms, 3 lease expiry, 4 key prefix
-- Returns {'S', {node...}}.

local nodes, node, now, prefix = KEYS[1], ARGV[1], ARGV[2], ARGV[4]
redis.call('ZADD', nodes, ARGV[3], node)
local gone = redis.call('ZRANGEBYSCORE', nodes, '-inf', '(' .. now)
table.sort(gone, bytes_lt)

for _, dead in ipairs(gone) do
    local index = prefix .. ':node:' .. dead .. ':held'
    local held = {}
    for _, m in ipairs(redis.call('SMEMBERS', index)) do
        local conn, room = split1(m)
        held[#held + 1] = { room, conn }
    end
    table.sort(held, function(a, b)
        if a[1] ~= b[1] then
            return bytes_lt(a[1], b[1])
        end
        return digits_lt(a[2], b[2])
    end)
    for _, rc in ipairs(held) do
        local room = prefix .. ':room:{' .. rc[1] .. '}'
        if redis.call('EXISTS', room) == 1 then
            take_out(room, room .. ':users', room .. ':holders', prefix .. ':ch:' .. rc[1],
                rc[2] .. ':' .. dead, now)
        end
    end
    redis.call('DEL', index)
    redis.call('ZREM', nodes, dead)
end
return { 'S', gone }
