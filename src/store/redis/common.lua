-- Chat Flow's Redis store: helpers prepended to every script (see mod.rs).
--
-- Lua numbers are doubles: every integer a script computes with (seq,
-- timestamps, bucket levels, counts) stays below 2^53, where doubles are
-- exact; the Rust side refuses arguments that could leave that range.
-- Numbers are written back with fmt(), never tostring() (which would print
-- 1e+15 and lose digits).

local function fmt(n)
    return string.format('%.0f', n)
end

-- 1 for true, 0 for false (a reply's flag).
local function flag(b)
    if b then
        return 1
    end
    return 0
end

-- The names of keys.rs for the keys a script computes (those not in KEYS).
local function room_key(prefix, id)
    return prefix .. ':room:{' .. id .. '}'
end

local function channel_key(prefix, id)
    return prefix .. ':ch:' .. id
end

-- A room's record fields, in the order codec.rs reads them (name,
-- description, kind, created_at, created_by, epoch), then any `...` asked
-- for after them.
local function room_fields(room, ...)
    return redis.call('HMGET', room, 'name', 'description', 'kind', 'created_at', 'created_by', 'epoch', ...)
end

-- The record part of `room_fields`' answer.
local function record_of(f)
    return { f[1], f[2], f[3], f[4], f[5], f[6] }
end

local function fail(what)
    error({ err = 'CHATFLOW ' .. what })
end

local function int(s, what)
    local n = tonumber(s)
    if n == nil then
        fail('not a number: ' .. what)
    end
    return n
end

-- `a < b` comparing bytes (table.sort's `<` on strings would follow the
-- server's locale).
local function bytes_lt(a, b)
    local n = math.min(#a, #b)
    for i = 1, n do
        local x, y = string.byte(a, i), string.byte(b, i)
        if x ~= y then
            return x < y
        end
    end
    return #a < #b
end

-- `a < b` for decimal integers of any size (no leading zeros).
local function digits_lt(a, b)
    if #a ~= #b then
        return #a < #b
    end
    return bytes_lt(a, b)
end

-- `<head>:<rest>`: the text before the first ':' and after it.
local function split1(s)
    local i = string.find(s, ':', 1, true)
    if i == nil then
        fail('no separator in ' .. s)
    end
    return string.sub(s, 1, i - 1), string.sub(s, i + 1)
end

-- A log entry is '<seq>:<n>:<retry key of n bytes><frame>'.
local function entry_seq(e)
    local s = split1(e)
    return int(s, 'entry seq')
end

local function entry_retry(e)
    local i = string.find(e, ':', 1, true)
    local j = i and string.find(e, ':', i + 1, true)
    if j == nil then
        fail('bad log entry')
    end
    local n = int(string.sub(e, i + 1, j - 1), 'entry retry length')
    if n == 0 then
        return nil
    end
    return string.sub(e, j + 1, j + n)
end

-- The entry of `seq` in a log whose entries have consecutive seqs, or nil.
local function entry_at(log, seq)
    local first = redis.call('LINDEX', log, 0)
    if not first then
        return nil
    end
    local index = seq - entry_seq(first)
    if index < 0 then
        return nil
    end
    local e = redis.call('LINDEX', log, index)
    if e and entry_seq(e) == seq then
        return e
    end
    return nil
end

-- A present user's value in a room's users hash: '<holders>:<username>'.
local function presence(v)
    local n, username = split1(v)
    return int(n, 'holder count'), username
end

-- Numbers the room's presence change and says it:
-- 'J'|'L' <members> ':' <pseq> ':' <last seq> ':' <#user> ':' <user>
-- <username>.
local function presence_event(room, joined, members, user, username)
    local tag = 'L'
    if joined then
        tag = 'J'
    end
    local pseq = redis.call('HINCRBY', room, 'pseq', 1)
    local last = redis.call('HGET', room, 'seq') or '0'
    return tag .. fmt(members) .. ':' .. fmt(pseq) .. ':' .. last .. ':' .. #user .. ':'
        .. user .. username
end

-- Takes holder field `h` of `user` out of a room (keys given); publishes
-- USER_LEFT when that was the user's last holder and marks the room empty
-- since `now` when it was the last user. Returns (last of user, members
-- after). A holder that is not in, or is in for another user, changes
-- nothing.
local function take_out(room, users, holders, channel, user, h, now)
    if redis.call('HGET', holders, h) ~= user then
        return false, redis.call('HLEN', users)
    end
    local v = redis.call('HGET', users, user)
    local count, username = 0, ''
    if v then
        count, username = presence(v)
    end
    redis.call('HDEL', holders, h)
    if count > 1 then
        redis.call('HSET', users, user, fmt(count - 1) .. ':' .. username)
        return false, redis.call('HLEN', users)
    end
    if not v then
        return false, redis.call('HLEN', users)
    end
    redis.call('HDEL', users, user)
    local members = redis.call('HLEN', users)
    if members == 0 then
        redis.call('HSET', room, 'empty_since', now)
    end
    redis.call('PUBLISH', channel, presence_event(room, false, members, user, username))
    return true, members
end

-- Keeps the newest `limit` (at least 1) entries of a log; an evicted
-- entry's retry key goes with it (when it still names that entry). `len`
-- is the log's length when the caller knows it (RPUSH answers it), else
-- nil.
local function trim(log, retry, limit, len)
    limit = math.max(1, limit)
    len = len or redis.call('LLEN', log)
    if len <= limit then
        return
    end
    for _, e in ipairs(redis.call('LRANGE', log, 0, len - limit - 1)) do
        local k = entry_retry(e)
        if k and redis.call('HGET', retry, k) == fmt(entry_seq(e)) then
            redis.call('HDEL', retry, k)
        end
    end
    redis.call('LTRIM', log, len - limit, -1)
end

-- What a recovery after `since` finds in a room whose last seq is `last`:
-- (recovered, entries). Recovered when the epoch matches (or was not
-- given), `since` is not beyond `last`, and nothing after it was evicted;
-- then the entries after `since`, else every retained entry.
local function recovery(log, last, epoch, since, since_epoch)
    local len = redis.call('LLEN', log)
    local first_retained = last + 1
    if len > 0 then
        first_retained = entry_seq(redis.call('LINDEX', log, 0))
    end
    local same_epoch = since_epoch == false or since_epoch == epoch
    if same_epoch and since <= last and since + 1 >= first_retained then
        -- The log's seqs are consecutive.
        local start = since + 1 - first_retained
        if start < len then
            return true, redis.call('LRANGE', log, start, -1)
        end
        return true, {}
    end
    return false, redis.call('LRANGE', log, 0, -1)
end

-- Charges a send bucket with exactly the arithmetic of src/core/bucket.rs:
-- the level counts 1/window of a token, capacity*window when full; a
-- missing bucket is full at `now`. Returns nil when a token was taken, else
-- the units missing for one (the caller divides by capacity, rounding up).
local function charge(key, capacity, window, now, ttl_ms)
    local max = capacity * window
    local level, updated = max, now
    local stored = redis.call('HMGET', key, 'level', 'updated')
    if stored[1] and stored[2] then
        level = int(stored[1], 'bucket level')
        updated = int(stored[2], 'bucket time')
        local elapsed = 0
        if now > updated then
            elapsed = now - updated
        end
        -- elapsed >= window refills any level completely; below it
        -- elapsed*capacity < max, so no product leaves the exact range.
        if elapsed >= window then
            level = max
        else
            level = math.min(level + elapsed * capacity, max)
        end
        updated = math.max(updated, now)
    end
    local token = window
    local missing = nil
    if level >= token then
        level = level - token
    else
        missing = token - level
    end
    redis.call('HSET', key, 'level', fmt(level), 'updated', fmt(updated))
    redis.call('PEXPIRE', key, ttl_ms)
    return missing
end

