"""The Lua scripts of the Redis broker: each multi-step operation is one atomic script.

Per-queue scripts get the queue's NKEYS keys (keys.py: streams p0..p9, claims, leases, delayed, bodies,
dead) in that order, so every key they touch is declared and shares the queue's hash slot.
A tag names a stream entry within its queue: "<band>:<entry id>".
"""

from __future__ import annotations

from .keys import BANDS

NOTIFY_TTL_MS = 5_000
QUEUED_TTL_MS = 86_400_000  # a QUEUED record lasts until a worker writes the next state, or a day

_LUA_NOW = "local _t = redis.call('TIME') local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)\n"

# each(call, command, fixed, items, size): the variadic `command` with arguments `fixed` then `items`,
# through `call` (redis.call or redis.pcall), in calls of at most `size` items (Lua's unpack has a limit).
_EACH = """
local function each(call, command, fixed, items, size)
  for first = 1, #items, size do
    local args = {}
    for i = 1, #fixed do args[i] = fixed[i] end
    for i = first, math.min(first + size - 1, #items) do args[#args+1] = items[i] end
    call(command, unpack(args))
  end
end
"""

# Entries carry the fields id and body (plain clients may XADD them: docs/brokers/redis.md).
# A tag names an entry in its queue: "<band>:<stream id>".
_QUEUED = """
local function queued(key, queue)
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 's', 'queued', 'q', queue)
    redis.call('PEXPIRE', key, QUEUED_TTL)
  end
end
""".replace("QUEUED_TTL", str(QUEUED_TTL_MS))

# QUEUED_MARKS: KEYS = result records; ARGV = their queues. A QUEUED mark where a task has no record.
QUEUED_MARKS = _QUEUED + """
for i = 1, #KEYS do queued(KEYS[i], ARGV[i]) end
return #KEYS
"""

# FORGET_QUEUED: KEYS = result records. Deleted where they are still only a QUEUED mark.
FORGET_QUEUED = """
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 's') == 'queued' then redis.call('DEL', KEYS[i]) end
end
return #KEYS
"""

# The one-by-one fast path: KEYS = stream, result record; ARGV = id, body, queue.
ENQUEUE = _QUEUED + """
redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'body', ARGV[2])
queued(KEYS[2], ARGV[3])
return 1
"""

# KEYS: NKEYS per queue, then idempotency keys and result records, then the meta hash (drop counters).
# ARGV: number of queues; per queue its key base, limit (-1: none), policy and name; then 8 per message.
# Each stored message gets a QUEUED result record unless its task already has one.
PUBLISH = _LUA_NOW + """
local nq = tonumber(ARGV[1])
QUEUED
local function waiting(b)
  local n = redis.call('ZCARD', KEYS[b+13]) - redis.call('ZCARD', KEYS[b+12])
  for band = 1, BANDS do n = n + redis.call('XLEN', KEYS[b+band]) end
  return n
end
local limits, adding = {}, {}
for q = 0, nq - 1 do
  local b = tonumber(ARGV[2+4*q])
  limits[b] = {tonumber(ARGV[3+4*q]), ARGV[4+4*q], ARGV[5+4*q]}
  adding[b] = 0
end
local first = 2 + 4 * nq
for i = first, #ARGV, 8 do  -- pass 1: refuse the whole batch if a "reject" queue would overflow
  local key = tonumber(ARGV[i+5])
  if key == 0 or not redis.call('GET', KEYS[key]) then adding[tonumber(ARGV[i])] = adding[tonumber(ARGV[i])] + 1 end
end
for b, lim in pairs(limits) do
  if lim[1] >= 0 and lim[2] ~= 'drop_oldest' then
    local n = waiting(b)
    if n + adding[b] > lim[1] then return {'full', b, n, lim[1]} end
  end
end
local ids = {}
for i = first, #ARGV, 8 do
  local b, id, body, band, eta, key, window, rk = tonumber(ARGV[i]), ARGV[i+1], ARGV[i+2], tonumber(ARGV[i+3]),
    tonumber(ARGV[i+4]), tonumber(ARGV[i+5]), ARGV[i+6], tonumber(ARGV[i+7])
  local held = false
  if key > 0 then
    held = redis.call('GET', KEYS[key])
    if not held then redis.call('SET', KEYS[key], id, 'PX', window) end
  end
  if held then
    ids[#ids+1] = held
  else
    if eta > now then
      redis.call('ZADD', KEYS[b+13], eta, id)
      redis.call('HSET', KEYS[b+14], id, band .. body)
    else
      redis.call('XADD', KEYS[b+1+band], '*', 'id', id, 'body', body)
    end
    queued(KEYS[rk], limits[b][3])
    ids[#ids+1] = id
  end
end
local prefix = string.sub(KEYS[#KEYS], 1, -6)  -- KEYS[#KEYS] is "<prefix>:meta"
local function forget(id)  -- a dropped message was never run: its QUEUED mark goes with it
  local rk = prefix .. ':r:{' .. id .. '}'
  if redis.call('HGET', rk, 's') == 'queued' then redis.call('DEL', rk) end
end
for b, lim in pairs(limits) do  -- "drop_oldest": trim after inserting, so a big batch keeps its newest
  local excess = lim[1] >= 0 and lim[2] == 'drop_oldest' and waiting(b) - lim[1] or 0
  if excess > 0 then
    local found = {}
    for band = 1, BANDS do
      local key, after = KEYS[b+band], '0-0'
      if redis.call('EXISTS', key) == 1 then
        local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', key)
        if ok then
          for _, g in ipairs(groups) do
            for j = 1, #g, 2 do if g[j] == 'last-delivered-id' then after = g[j+1] end end
          end
        end
        for _, e in ipairs(redis.call('XRANGE', key, '(' .. after, '+', 'COUNT', excess)) do
          local ms, seq = string.match(e[1], '(%d+)-(%d+)')
          local id = ''
          for j = 1, #e[2], 2 do if e[2][j] == 'id' then id = e[2][j+1] end end
          found[#found+1] = {tonumber(ms), tonumber(seq), key, e[1], id}
        end
      end
    end
    table.sort(found, function(x, y) return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2]) end)
    local dropped = 0
    for j = 1, math.min(excess, #found) do
      redis.call('XDEL', found[j][3], found[j][4])
      forget(found[j][5])
      dropped = dropped + 1
    end
    if dropped < excess then
      for _, id in ipairs(redis.call('ZRANGE', KEYS[b+13], 0, excess - dropped - 1)) do
        redis.call('ZREM', KEYS[b+13], id)
        redis.call('HDEL', KEYS[b+14], id)
        forget(id)
        dropped = dropped + 1
      end
    end
    redis.call('HINCRBY', KEYS[#KEYS], 'chute.dropped:' .. lim[3], dropped)
  end
end
return ids
""".replace("BANDS", str(BANDS)).replace("QUEUED\n", _QUEUED, 1)

# FETCH: KEYS = NKEYS per queue; ARGV = group, consumer, limit, lease ms, claim token, and the result
# records' key head ("<prefix>:r:{"): each taken entry says whether its task's record is cancelled.
FETCH = _LUA_NOW + _EACH + """
local group, consumer, limit, lease, token = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local records = ARGV[6]
local nq = #KEYS / 15
local out = {}
local function fields(f)
  local id, body = nil, ''
  for j = 1, #f, 2 do
    if f[j] == 'id' then id = f[j+1] elseif f[j] == 'body' then body = f[j+1] end
  end
  return id, body
end
local claims, leases = {}, {}  -- per queue: the claim and lease of each taken entry, written at the end
local function take(q, b, band, entry, n)
  local tag = band .. ':' .. entry[1]
  local id, body = fields(entry[2])
  local c, l = claims[b], leases[b]
  if not c then c, l = {}, {}; claims[b], leases[b] = c, l end
  c[#c+1], c[#c+2] = tag, token
  l[#l+1], l[#l+2] = now + lease, tag
  out[#out+1] = {q, tag, id or entry[1], body, n}
end
for q = 0, nq - 1 do
  local b = q * 15
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[b+13], '-inf', now, 'LIMIT', 0, 1000)) do
    local v = redis.call('HGET', KEYS[b+14], id)
    if v then
      redis.call('XADD', KEYS[b+1+tonumber(string.sub(v, 1, 1))], '*', 'id', id, 'body', string.sub(v, 2))
      redis.call('HDEL', KEYS[b+14], id)
    end
    redis.call('ZREM', KEYS[b+13], id)
  end
  if #out < limit then
    for _, tag in ipairs(redis.call('ZRANGEBYSCORE', KEYS[b+12], '-inf', now, 'LIMIT', 0, limit - #out)) do
      local band = tonumber(string.sub(tag, 1, 1))
      local entry = string.sub(tag, 3)
      local got = redis.pcall('XCLAIM', KEYS[b+1+band], group, consumer, 0, entry)
      if type(got) == 'table' and not got.err and got[1] and got[1][2] then
        local p = redis.call('XPENDING', KEYS[b+1+band], group, entry, entry, 1)
        take(q, b, band, got[1], p[1] and p[1][4] or 1)
      else  -- not pending any more (someone else acked or deleted its consumer): if the entry is still
        -- there, queue it again rather than strand it behind the group's read position
        local e = redis.call('XRANGE', KEYS[b+1+band], entry, entry)
        if e[1] then
          local id, body = fields(e[1][2])
          redis.call('XDEL', KEYS[b+1+band], entry)
          redis.call('XADD', KEYS[b+1+band], '*', 'id', id or entry, 'body', body)
        end
        redis.call('ZREM', KEYS[b+12], tag)
        redis.call('HDEL', KEYS[b+11], tag)
      end
    end
  end
end
for band = BANDS - 1, 0, -1 do
  for q = 0, nq - 1 do
    if #out >= limit then break end
    local b = q * 15
    local key = KEYS[b+1+band]
    if redis.call('EXISTS', key) == 1 then
      local r = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', limit - #out, 'STREAMS', key, '>')
      if type(r) == 'table' and r.err then
        redis.pcall('XGROUP', 'CREATE', key, group, '0')
        r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', limit - #out, 'STREAMS', key, '>')
      end
      if r then
        for _, entry in ipairs(r[1][2]) do take(q, b, band, entry, 1) end
      end
    end
  end
end
if #out > 0 then
  for b, c in pairs(claims) do
    each(redis.call, 'HSET', {KEYS[b+11]}, c, 1000)
    each(redis.call, 'ZADD', {KEYS[b+12]}, leases[b], 1000)
  end
  for _, o in ipairs(out) do  -- the record's key is in the task's slot: standalone servers, as STORE
    o[6] = redis.call('HGET', records .. o[3] .. '}', 's') == 'cancelled' and 1 or 0
  end
  return {now, -1, out, {}}
end
local next_due = -1
local last = {}
for q = 0, nq - 1 do
  local b = q * 15
  for _, k in ipairs({b+12, b+13}) do
    local first = redis.call('ZRANGE', KEYS[k], 0, 0, 'WITHSCORES')
    if first[2] and (next_due < 0 or tonumber(first[2]) < next_due) then next_due = tonumber(first[2]) end
  end
  for band = 0, BANDS - 1 do
    local top = redis.call('XREVRANGE', KEYS[b+1+band], '+', '-', 'COUNT', 1)
    last[#last+1] = top[1] and top[1][1] or '0-0'
  end
end
return {now, next_due, out, last}
""".replace("BANDS", str(BANDS))

# Shared by ack, nack, release and dead-letter: settle the entry if `claim` still holds it.
SETTLE = """
local function settle(tag, claim)
  if redis.call('HGET', KEYS[11], tag) ~= claim then return false end
  local key, entry = KEYS[1+tonumber(string.sub(tag, 1, 1))], string.sub(tag, 3)
  redis.pcall('XACK', key, ARGV[1], entry)
  redis.call('XDEL', key, entry)
  redis.call('HDEL', KEYS[11], tag)
  redis.call('ZREM', KEYS[12], tag)
  return true
end
"""

# ACK: the claims of a batch read in one HMGET (per 1,000), each checked, then the held entries
# settled with one call per command and band.
ACK = _EACH + """
local group, tags, seen, bands, asked, held = ARGV[1], {}, {}, {}, {}, {}
for i = 2, #ARGV, 2 do asked[#asked+1] = ARGV[i] end
each(function(...) for _, v in ipairs(redis.call(...)) do held[#held+1] = v end end, 'HMGET', {KEYS[11]}, asked, 1000)
for i = 2, #ARGV, 2 do
  local tag = ARGV[i]
  if not seen[tag] and held[i / 2] == ARGV[i+1] then
    seen[tag] = true
    tags[#tags+1] = tag
    local band = tonumber(string.sub(tag, 1, 1))
    local ids = bands[band]
    if not ids then ids = {}; bands[band] = ids end
    ids[#ids+1] = string.sub(tag, 3)
  end
end
if #tags == 0 then return 0 end
for band, ids in pairs(bands) do
  each(redis.pcall, 'XACK', {KEYS[1+band], group}, ids, 1000)  -- as settle(): a missing group is no error
  each(redis.call, 'XDEL', {KEYS[1+band]}, ids, 1000)
end
each(redis.call, 'HDEL', {KEYS[11]}, tags, 1000)
each(redis.call, 'ZREM', {KEYS[12]}, tags, 1000)
return #tags
"""

RELEASE = SETTLE + """
local n = 0
for i = 2, #ARGV, 4 do
  if settle(ARGV[i], ARGV[i+1]) then
    redis.call('XADD', KEYS[1+tonumber(string.sub(ARGV[i], 1, 1))], '*', 'id', ARGV[i+2], 'body', ARGV[i+3])
    n = n + 1
  end
end
return n
"""

NACK = _LUA_NOW + SETTLE + """
local tag, id, body, due = ARGV[2], ARGV[4], ARGV[5], tonumber(ARGV[6])
if not settle(tag, ARGV[3]) then return 0 end
local band = string.sub(tag, 1, 1)
if due > now then
  redis.call('ZADD', KEYS[13], due, id)
  redis.call('HSET', KEYS[14], id, band .. body)
else
  redis.call('XADD', KEYS[1+tonumber(band)], '*', 'id', id, 'body', body)
end
return 1
"""

DEAD = _LUA_NOW + SETTLE + """
if not settle(ARGV[2], ARGV[3]) then return 0 end
redis.call('XADD', KEYS[15], '*', 'id', ARGV[4], 'body', ARGV[5], 'reason', ARGV[6], 'at', now,
           'band', string.sub(ARGV[2], 1, 1))
return 1
"""

EXTEND = _LUA_NOW + """
local held = {}
for i = 3, #ARGV, 2 do
  if redis.call('HGET', KEYS[11], ARGV[i]) == ARGV[i+1] then
    redis.call('ZADD', KEYS[12], 'XX', now + tonumber(ARGV[2]), ARGV[i])
    held[#held+1] = 1
  else
    held[#held+1] = 0
  end
end
return held
"""

STATS = _LUA_NOW + """
local total = 0
for band = 1, BANDS do total = total + redis.call('XLEN', KEYS[band]) end
local leased = redis.call('ZCARD', KEYS[12])
local expired = redis.call('ZCOUNT', KEYS[12], '-inf', now)
local due = redis.call('ZCOUNT', KEYS[13], '-inf', now)
local delayed = redis.call('ZCARD', KEYS[13])
return {total - leased + expired + due, leased - expired, delayed - due, redis.call('XLEN', KEYS[15])}
""".replace("BANDS", str(BANDS))

# Replay (ARGV[1] = "1") or purge (ARGV[1] = "0") dead letters whose ids are in ARGV[3..]; all if ARGV[2] = "1".
# DEAD_MOVE: KEYS = the queue's NKEYS; ARGV = replay?, all?, prefix, queue name, ids...
# A replayed message's DEAD result record becomes a QUEUED mark in the same script, so `get()` on a
# replayed task waits for its new run instead of returning the old failure. (The record's key is in
# the task's slot, not the queue's: standalone servers only, like the batched result scripts.)
DEAD_MOVE = _QUEUED + """
local replay, all, prefix, queue = ARGV[1] == '1', ARGV[2] == '1', ARGV[3], ARGV[4]
local wanted = {}
for i = 5, #ARGV do wanted[ARGV[i]] = true end
local n = 0
for _, e in ipairs(redis.call('XRANGE', KEYS[15], '-', '+')) do
  local f = {}
  for j = 1, #e[2], 2 do f[e[2][j]] = e[2][j+1] end
  if all or wanted[f.id] then
    if replay then
      redis.call('XADD', KEYS[1+tonumber(f.band or '0')], '*', 'id', f.id, 'body', f.body or '')
      local rk = prefix .. ':r:{' .. f.id .. '}'
      if redis.call('HGET', rk, 's') == 'dead' then
        redis.call('DEL', rk)
        queued(rk, queue)
      end
    end
    redis.call('XDEL', KEYS[15], e[1])
    n = n + 1
  end
end
return n
"""

# Results, a batch per call. _STARTED: KEYS = records; ARGV = (record, expiry unix ms or 0) pairs, ttl ms.
# A STARTED record never hides an outcome (a redelivery after the worker recorded it but died).
STARTED = """
local ttl = ARGV[#ARGV]
local cancelled = {}
for i = 1, #KEYS do
  local s = redis.call('HGET', KEYS[i], 's')
  if s == 'cancelled' then
    cancelled[#cancelled+1] = i - 1
  elseif s ~= 'succeeded' and s ~= 'failed' then
    redis.call('HSET', KEYS[i], 's', 'started', 'r', ARGV[2*i-1])
    if ARGV[2*i] ~= '0' then redis.call('PEXPIREAT', KEYS[i], ARGV[2*i]) else redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
return cancelled
"""

# STORE: KEYS = (record, waiters) pairs; ARGV = (state, record, expiry ms or 0, finished) quadruples.
# `waiters` is the set of wake-up lists of wait() calls blocked on the task: a finished record is
# pushed into each, so a waiter gets it from its BLPOP with no further round trip.
# One EXISTS over every waiters set first: a batch nobody waits on costs no SMEMBERS per record.
STORE = _EACH + """
local sets = {}
for i = 2, #KEYS, 2 do sets[#sets+1] = KEYS[i] end
local waited = 0
each(function(...) waited = waited + redis.call(...) end, 'EXISTS', {}, sets, 1000)
for i = 1, #KEYS / 2 do
  local k, a = 2 * i - 1, 4 * i - 3
  -- a start lands over nothing, queued, retrying or started: never over a cancellation or an outcome
  local held = ARGV[a] == 'started' and redis.call('HGET', KEYS[k], 's')
  if not held or held == 'queued' or held == 'retrying' or held == 'started' then
    redis.call('HSET', KEYS[k], 's', ARGV[a], 'r', ARGV[a+1])
    if ARGV[a+2] ~= '0' then redis.call('PEXPIREAT', KEYS[k], ARGV[a+2]) else redis.call('PERSIST', KEYS[k]) end
    if waited > 0 and ARGV[a+3] == '1' then
      local lists = redis.call('SMEMBERS', KEYS[k+1])
      if lists[1] then
        for _, list in ipairs(lists) do
          redis.call('LPUSH', list, ARGV[a+1])
          redis.call('PEXPIRE', list, NOTIFY_TTL)
        end
        redis.call('DEL', KEYS[k+1])
      end
    end
  end
end
return 0
""".replace("NOTIFY_TTL", str(NOTIFY_TTL_MS))

CANCELLED = """
local found = {}
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 's') == 'cancelled' then found[#found+1] = i - 1 end
end
return found
"""

CANCEL = """
local s = redis.call('HGET', KEYS[1], 's')
if s == 'succeeded' or s == 'failed' or s == 'cancelled' then return s end
redis.call('HSET', KEYS[1], 's', 'cancelled', 'r', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 'cancelled'
"""

ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Token bucket on the server's clock: KEYS[1] = bucket hash; ARGV = rate per s, burst. Returns wait ms.
TAKE = _LUA_NOW + """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = burst
if b[1] then tokens = math.min(burst, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * rate / 1000) end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
"""

RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
