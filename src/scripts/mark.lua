-- mark.lua -- the first of two steps of a journaled write with a repeat-view window on a Redis
-- Cluster: one bucket's part of the write checked as unit.lua checks a unit -- its attempt
-- marker, its fence, each view against the window, remembering those that are not repeats in
-- the bucket's window hashes -- and nothing counted. The collector then appends the views
-- that are not repeats to its journal (ack.lua, in the journal's slot), or, when that surely
-- failed, asks unmark.lua to forget them.
--
-- KEYS and ARGV as apply.lua's (the records' other declared keys unused). Returns unit.lua's
-- answer, its "expired" empty.

return run_unit(KEYS, ARGV, function() end, function()
    return ''
end)
