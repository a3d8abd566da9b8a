-- Lookup.
-- KEYS: 1 room hash
-- Returns {'N'} or {'R', name, description, kind, created_at, created_by,
-- epoch}.

local f = room_fields(KEYS[1])
if not f[6] then
    return { 'N' }
end
return { 'R', unpack(record_of(f)) }
