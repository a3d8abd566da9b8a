-- EnsureRoom and CreateRoom.
-- KEYS: 1 room hash, 2 log, 3 retry index, 4 users, 5 holders, 6 rooms index,
--       7 creator's rooms (a set; any key when there is no creator)
-- ARGV: 1 'ensure' | 'create', 2 id, 3 name, 4 description, 5 kind,
--       6 created_at_ms, 7 created_by ('' with 8 = '0': none), 8 '1' if
--       created_by is set, 9 epoch, 10 rooms_per_user_max, 11 max_rooms,
--       (a CreateRoom counts the room in KEYS[7], its creator's or, without
--       one, that of the user ''; an EnsureRoom counts it against nobody)
--       12 key prefix (for pruning rooms whose data was lost)
-- Returns {'R', fields...} (EnsureRoom: the room that exists), {'C'}
-- (created as given), {'U'} / {'E'} / {'M'} (refused: user limit, exists,
-- room limit).

local room, rooms, creator = KEYS[1], KEYS[6], KEYS[7]
local mode, id = ARGV[1], ARGV[2]
local has_creator = ARGV[8] == '1'
local prefix = ARGV[12]

-- Index entries whose room hash is gone (its data was lost) are dropped
-- before a cap is judged on them.
local function prune_set(key)
    for _, rid in ipairs(redis.call('SMEMBERS', key)) do
        if redis.call('EXISTS', room_key(prefix, rid)) == 0 then
            redis.call('SREM', key, rid)
        end
    end
end

local function prune_rooms()
    for _, rid in ipairs(redis.call('ZRANGE', rooms, 0, -1)) do
        if redis.call('EXISTS', room_key(prefix, rid)) == 0 then
            redis.call('ZREM', rooms, rid)
        end
    end
end

if mode == 'ensure' then
    if redis.call('EXISTS', room) == 1 then
        return { 'R', unpack(record_of(room_fields(room))) }
    end
else
    local per_user = int(ARGV[10], 'rooms_per_user_max')
    if redis.call('SCARD', creator) >= per_user then
        prune_set(creator)
        if redis.call('SCARD', creator) >= per_user then
            return { 'U' }
        end
    end
    if redis.call('EXISTS', room) == 1 then
        return { 'E' }
    end
    local max_rooms = int(ARGV[11], 'max_rooms')
    if redis.call('ZCARD', rooms) >= max_rooms then
        prune_rooms()
        if redis.call('ZCARD', rooms) >= max_rooms then
            return { 'M' }
        end
    end
end

-- A new room, or one whose data was lost: whatever is left of an earlier
-- life of this id goes with its epoch.
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
-- Empty since it was created, until someone joins.
redis.call('HSET', room, 'name', ARGV[3], 'description', ARGV[4], 'kind', ARGV[5],
    'created_at', ARGV[6], 'epoch', ARGV[9], 'seq', '0', 'empty_since', ARGV[6])
if has_creator then
    redis.call('HSET', room, 'created_by', ARGV[7])
end
if mode == 'create' then
    redis.call('SADD', creator, id)
    -- Not there to others until its creator joined it (the creator is
    -- joined at once, as far as anyone sees).
    redis.call('HSET', room, 'awaiting_creator', '1')
end
redis.call('ZADD', rooms, 0, id)
return { 'C' }
