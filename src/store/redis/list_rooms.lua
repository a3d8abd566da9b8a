-- ListRooms.
-- KEYS: 1 rooms index
-- ARGV: 1 key prefix
-- Returns {'L', {id, name, description, kind, created_at, created_by,
-- epoch, member_count}...} in the index's order (bytes of the id); rooms
-- whose hash is gone (data lost) are dropped from the index.

local prefix = ARGV[1]
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local room = room_key(prefix, id)
    if redis.call('EXISTS', room) == 0 then
        redis.call('ZREM', KEYS[1], id)
    else
        -- Not listed before its creator joined it.
        local f = room_fields(room, 'awaiting_creator')
        if not f[7] then
            local members = redis.call('HLEN', room .. ':users')
            out[#out + 1] = { id, f[1], f[2], f[3], f[4], f[5], f[6], members }
        end
    end
end
return { 'L', out }
