-- Lookup.
-- KEYS: 1 room hash
-- Returns {'N'} or {'R', name, description, kind, created_at, created_by,
-- epoch}.

-- A room whose creator has not joined it yet is not there to others.
local f = room_fields(KEYS[1], 'awaiting_creator')
if not f[6] or f[7] then
    return { 'N' }
end
return { 'R', unpack(record_of(f)) }
