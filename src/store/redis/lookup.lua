-- Lookup.
-- KEYS: 1 room hash
-- Returns {'N'} or {'R', name, description, kind, created_at, created_by,
-- epoch}.

local f = redis.call('HMGET', KEYS[1], 'name', 'description', 'kind', 'created_at', 'created_by', 'epoch')
if not f[6] then
    return { 'N' }
end
return { 'R', f[1], f[2], f[3], f[4], f[5], f[6] }
