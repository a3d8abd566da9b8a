-- Typing: nothing stored, one event.
-- ARGV: 1 channel, 2 the event
redis.call('PUBLISH', ARGV[1], ARGV[2])
return { 'T' }
