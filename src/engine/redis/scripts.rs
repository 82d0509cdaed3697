//! Lua scripts run by Redis, so each step that reads and writes several keys is atomic.
//! Loaded with SCRIPT LOAD on every new connection and called by SHA1 (EVALSHA).

/// Publish (with history, idempotency and versions as asked).
/// KEYS: stream, stream meta, idempotency result.
/// ARGV: payload, history size (0 = no history), history ttl s, topic, meta ttl s (0 = none),
/// new epoch, idempotent ('1'/'0'), result ttl s, version ('0' = none), version epoch.
/// Returns {offset, epoch, state}: state 0 published, 1 idempotent repeat, 2 stale version.
pub const PUBLISH: &str = r#"
if ARGV[7] == '1' then
  local r = redis.call('hmget', KEYS[3], 'e', 's')
  if r[1] then return {r[2] or '0', r[1], 1} end
end
local size = tonumber(ARGV[2])
local epoch = ''
if size > 0 or ARGV[9] ~= '0' then
  epoch = redis.call('hget', KEYS[2], 'e')
  if not epoch then
    epoch = ARGV[6]
    redis.call('hset', KEYS[2], 'e', epoch)
  end
end
if ARGV[9] ~= '0' then
  local v = redis.call('hmget', KEYS[2], 'v', 've')
  if v[1] and v[2] == ARGV[10] and tonumber(v[1]) >= tonumber(ARGV[9]) then
    return {'0', epoch, 2}
  end
  redis.call('hset', KEYS[2], 'v', ARGV[9], 've', ARGV[10])
end
local offset = 0
if size > 0 then
  offset = redis.call('hincrby', KEYS[2], 's', 1)
  if offset == 1 then redis.call('del', KEYS[1]) end
  redis.call('xadd', KEYS[1], 'MAXLEN', size, offset, 'd', ARGV[1])
  redis.call('expire', KEYS[1], ARGV[3])
  redis.call('publish', ARGV[4], '__p1:' .. offset .. ':' .. epoch .. '__' .. ARGV[1])
else
  redis.call('publish', ARGV[4], ARGV[1])
end
if epoch ~= '' and ARGV[5] ~= '0' then redis.call('expire', KEYS[2], ARGV[5]) end
if ARGV[7] == '1' then
  redis.call('hset', KEYS[3], 'e', epoch, 's', tostring(offset))
  redis.call('expire', KEYS[3], ARGV[8])
end
return {tostring(offset), epoch, 0}
"#;

/// Reads the stream position and, when asked, publications.
/// KEYS: stream, stream meta.
/// ARGV: include publications ('1'/'0'), since offset (exclusive; '' = from the start/end),
/// limit ('-1' = all), reverse ('1'/'0'), meta ttl s (0 = none), new epoch.
/// Returns {top offset, epoch[, entries]} (entries as XRANGE gives them).
pub const HISTORY: &str = r#"
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('hset', KEYS[2], 'e', epoch)
end
local top = redis.call('hget', KEYS[2], 's')
if not top then top = '0' end
if ARGV[5] ~= '0' then redis.call('expire', KEYS[2], ARGV[5]) end
if ARGV[1] == '0' then return {top, epoch} end
local entries
if ARGV[4] == '0' then
  local from = '-'
  if ARGV[2] ~= '' then from = '(' .. ARGV[2] .. '-0' end
  if ARGV[3] == '-1' then
    entries = redis.call('xrange', KEYS[1], from, '+')
  else
    entries = redis.call('xrange', KEYS[1], from, '+', 'COUNT', ARGV[3])
  end
else
  local to = '+'
  -- An incomplete ID as the upper end means <offset>-<max seq>: spell the entry's own ID.
  if ARGV[2] ~= '' then to = '(' .. ARGV[2] .. '-0' end
  if ARGV[3] == '-1' then
    entries = redis.call('xrevrange', KEYS[1], to, '-')
  else
    entries = redis.call('xrevrange', KEYS[1], to, '-', 'COUNT', ARGV[3])
  end
end
return {top, epoch, entries}
"#;

/// Adds or refreshes presence entries.
/// KEYS: presence expire zset, presence data hash. ARGV: ttl s, expire-at unix s, then
/// (client id, info) pairs.
pub const PRESENCE_ADD: &str = r#"
for i = 3, #ARGV, 2 do
  redis.call('zadd', KEYS[1], ARGV[2], ARGV[i])
  redis.call('hset', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('expire', KEYS[1], ARGV[1])
redis.call('expire', KEYS[2], ARGV[1])
return 1
"#;

/// Removes a presence entry. KEYS: expire zset, data hash. ARGV: client id.
pub const PRESENCE_REMOVE: &str = r#"
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('zrem', KEYS[1], ARGV[1])
return 1
"#;

/// Drops expired entries and returns the rest. KEYS: expire zset, data hash. ARGV: now unix s.
/// Returns HGETALL's flat list.
pub const PRESENCE_GET: &str = r#"
local expired = redis.call('zrangebyscore', KEYS[1], '0', ARGV[1])
if #expired > 0 then
  for _, c in ipairs(expired) do redis.call('hdel', KEYS[2], c) end
  redis.call('zremrangebyscore', KEYS[1], '0', ARGV[1])
end
return redis.call('hgetall', KEYS[2])
"#;

/// SHA1 hex of a script, as SCRIPT LOAD returns it.
pub fn sha(script: &str) -> String {
    use sha1::Digest;
    let d = sha1::Sha1::digest(script.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets or removes a key of a map channel: the change joins the channel's stream (offset,
/// epoch), the state follows it, and the change is published, all at once. The keys and
/// values are those of Centrifugo's Redis map broker.
/// KEYS: stream (entries `e` epoch, `d` publication), stream meta (`e`, `s`), state hash
/// (key → "<offset>:<epoch>:<publication>"), key order zset (score 0, lexical order), expire
/// zset (key → expiry unix ms), idempotency result, state meta (`epoch` of the state,
/// `updated_at`, `v:<key>` / `ve:<key>` versions).
/// ARGV: key, payload (publication without offset), removed ('1'/'0'), stream size, stream
/// ttl s, topic, new epoch, key ttl ms ('0' = none), now unix ms, only-if-expired ('1'/'0':
/// an expiry sweep's removal, done only while the key's expiry has passed), idempotent
/// ('1'/'0'), result ttl s, key mode ('', 'if_new', 'if_exists'), refresh the TTL of a present
/// key under 'if_new' ('1'/'0'), version (0 = none), version epoch, meta ttl ms ('0' = none:
/// the channel's keys do not expire).
/// A state of another stream epoch (the stream meta expired, or was removed) goes first.
/// Returns {offset, epoch, changed (1/0), why not ('' when changed)}; an unchanged one answers
/// the stream top. Checked in order: idempotency, version, key mode.
pub const MAP_PUBLISH: &str = r#"
if ARGV[11] == '1' then
  local r = redis.call('hmget', KEYS[6], 'e', 's')
  if r[1] then return {r[2] or '0', r[1], 0, 'idempotency'} end
end
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[7]
  redis.call('hset', KEYS[2], 'e', epoch)
end
local state_epoch = redis.call('hget', KEYS[7], 'epoch')
if state_epoch and state_epoch ~= epoch then
  redis.call('del', KEYS[3], KEYS[4], KEYS[5], KEYS[7])
end
local meta_ttl = tonumber(ARGV[17])
local function keep()
  if meta_ttl > 0 then
    for _, i in ipairs({2, 3, 4, 5, 7}) do redis.call('pexpire', KEYS[i], meta_ttl) end
  end
end
local now = tonumber(ARGV[9])
local vf, vef = 'v:' .. ARGV[1], 've:' .. ARGV[1]
if ARGV[3] == '1' then
  local gone = redis.call('hexists', KEYS[3], ARGV[1]) == 0
  if not gone and ARGV[10] == '1' then
    local at = redis.call('zscore', KEYS[5], ARGV[1])
    gone = (not at) or tonumber(at) > now
  end
  if gone then
    return {redis.call('hget', KEYS[2], 's') or '0', epoch, 0, 'key_not_found'}
  end
else
  local present = redis.call('hexists', KEYS[3], ARGV[1]) == 1
  if present then
    local at = redis.call('zscore', KEYS[5], ARGV[1])
    if at and tonumber(at) <= now then present = false end
  end
  local version = tonumber(ARGV[15])
  if present and version > 0 then
    local cur = redis.call('hmget', KEYS[7], vf, vef)
    if cur[1] and (ARGV[16] == '' or ARGV[16] == (cur[2] or '')) and version <= tonumber(cur[1]) then
      return {redis.call('hget', KEYS[2], 's') or '0', epoch, 0, 'version'}
    end
  end
  if ARGV[13] == 'if_new' and present then
    if ARGV[14] == '1' and ARGV[8] ~= '0' then
      redis.call('zadd', KEYS[5], now + tonumber(ARGV[8]), ARGV[1])
      keep()
    end
    return {redis.call('hget', KEYS[2], 's') or '0', epoch, 0, 'key_exists'}
  end
  if ARGV[13] == 'if_exists' and not present then
    return {redis.call('hget', KEYS[2], 's') or '0', epoch, 0, 'key_not_found'}
  end
end
local offset = redis.call('hincrby', KEYS[2], 's', 1)
if offset == 1 then redis.call('del', KEYS[1]) end
redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[4], offset, 'e', epoch, 'd', ARGV[2])
redis.call('expire', KEYS[1], ARGV[5])
if ARGV[3] == '1' then
  redis.call('hdel', KEYS[3], ARGV[1])
  redis.call('zrem', KEYS[4], ARGV[1])
  redis.call('zrem', KEYS[5], ARGV[1])
  redis.call('hdel', KEYS[7], vf, vef)
else
  redis.call('hset', KEYS[3], ARGV[1], offset .. ':' .. epoch .. ':' .. ARGV[2])
  redis.call('zadd', KEYS[4], 0, ARGV[1])
  if ARGV[8] ~= '0' then
    redis.call('zadd', KEYS[5], now + tonumber(ARGV[8]), ARGV[1])
  else
    redis.call('zrem', KEYS[5], ARGV[1])
  end
  if tonumber(ARGV[15]) > 0 then
    redis.call('hset', KEYS[7], vf, ARGV[15], vef, ARGV[16])
  else
    redis.call('hdel', KEYS[7], vf, vef)
  end
end
redis.call('hset', KEYS[7], 'epoch', epoch, 'updated_at', ARGV[9])
keep()
redis.call('publish', ARGV[6], '__p1:' .. offset .. ':' .. epoch .. '__' .. ARGV[2])
if ARGV[11] == '1' then
  redis.call('hset', KEYS[6], 'e', epoch, 's', tostring(offset))
  redis.call('expire', KEYS[6], ARGV[12])
end
return {tostring(offset), epoch, 1, ''}
"#;

/// A page of a map channel's state in key order, with the stream position.
/// KEYS: stream meta, state hash, key order zset, expire zset, state meta.
/// ARGV: cursor (the page starts after it; '' = from the first key), limit, now unix ms,
/// new epoch, one key ('' = a page; else that key's entry alone, if any). Keys whose expiry
/// passed (not yet swept) are left out; a state of another stream epoch reads as empty. The
/// key order is made again from the state when they differ (keys another writer of the
/// layout set without it).
/// Returns {top offset, epoch, the page's last key ('' on the last page), {key, value, ...}}.
pub const MAP_READ: &str = r#"
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('hset', KEYS[1], 'e', epoch)
end
local top = redis.call('hget', KEYS[1], 's') or '0'
local state_epoch = redis.call('hget', KEYS[5], 'epoch')
if state_epoch and state_epoch ~= epoch then return {top, epoch, '', {}} end
local n = redis.call('hlen', KEYS[2])
if redis.call('zcard', KEYS[3]) ~= n then
  redis.call('del', KEYS[3])
  local all = redis.call('hkeys', KEYS[2])
  for i = 1, #all, 1000 do
    local args = {}
    for j = i, math.min(i + 999, #all) do
      args[#args + 1] = 0
      args[#args + 1] = all[j]
    end
    redis.call('zadd', KEYS[3], unpack(args))
  end
  local ttl = redis.call('pttl', KEYS[2])
  if ttl > 0 then redis.call('pexpire', KEYS[3], ttl) end
end
local from = '-'
if ARGV[1] ~= '' then from = '(' .. ARGV[1] end
local limit = tonumber(ARGV[2])
local keys
local last = ''
if ARGV[5] and ARGV[5] ~= '' then
  keys = {ARGV[5]}
else
  keys = redis.call('zrangebylex', KEYS[3], from, '+', 'LIMIT', 0, limit + 1)
  if #keys > limit then
    table.remove(keys)
    last = keys[#keys]
  end
end
local now = tonumber(ARGV[3])
local out = {}
for _, k in ipairs(keys) do
  local at = redis.call('zscore', KEYS[4], k)
  if not at or tonumber(at) > now then
    local v = redis.call('hget', KEYS[2], k)
    if v then
      out[#out + 1] = k
      out[#out + 1] = v
    end
  end
end
return {top, epoch, last, out}
"#;

/// The keys of a map channel whose expiry has passed (at most the batch size) and the
/// earliest expiry left after them. KEYS: expire zset. ARGV: now unix ms, batch size.
/// Returns {next expiry ms ('' = none), key, key, ...}.
pub const MAP_EXPIRED: &str = r#"
local n = tonumber(ARGV[2])
local keys = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, n)
local next
if #keys == n and redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', n, 1)[1] then
  -- More have expired than one batch takes: the next sweep goes on with them.
  next = {ARGV[1], ARGV[1]}
else
  next = redis.call('zrangebyscore', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
end
local out = {next[2] or ''}
for _, k in ipairs(keys) do out[#out + 1] = k end
return out
"#;
