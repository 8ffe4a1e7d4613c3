//! The Lua scripts: every change to cluster-wide state is one script, so the count it returns
//! is the cluster's answer at that instant (who was first in, who was last out).
//!
//! A node's *contributions* live in its own hash, `{prefix}:node:{id}`, one field per thing it
//! holds, valued by how many of it it holds:
//!
//! | field | value | aggregate it feeds |
//! | --- | --- | --- |
//! | `s␟app␟channel` | local subscriptions | `{prefix}:app:{app}:channels` (channel → count) |
//! | `p␟app␟channel␟user` | 1 while the user has a local socket there | `…:presence:{channel}` (user → nodes), `…:members:{channel}` (user → info) |
//! | `c␟app` | local connections | `…:connections` |
//! | `u␟app␟socket␟user` | 1 | `…:user:{user}` (socket → node) |
//!
//! (`␟` is the unit separator `\x1f`; app ids and channel names cannot contain it, and the
//! user id, which can, is always last.) Each script changes one field by a delta and the
//! aggregate by the same delta, in one step; a node never takes away more than it gave (a
//! decrement of a missing field is ignored), so after Redis lost its data a late decrement
//! cannot push a count below zero. Reaping a dead node runs every field backwards in one script
//! and returns what changed for the cluster.

use redis::Script;

/// Shared Lua helpers: split a field, build the aggregate keys from a field.
pub const HELPERS: &str = r#"
local SEP = "\31"
local function split(s)
  local out = {}
  local start = 1
  while #out < 3 do
    local i = string.find(s, SEP, start, true)
    if not i then break end
    table.insert(out, string.sub(s, start, i - 1))
    start = i + 1
  end
  table.insert(out, string.sub(s, start))
  return out
end
local function app_key(prefix, app, rest)
  return prefix .. ":app:" .. app .. ":" .. rest
end
-- Applies `delta` to one contribution field of `nodekey` and to the aggregate it feeds.
-- Returns a transition: "" (none), or "o"/"v" (channel occupied/vacated), "a"/"r" (member
-- added/removed), with the field's parts.
local function apply(prefix, nodekey, nodeid, field, delta, info)
  local have = tonumber(redis.call("HGET", nodekey, field) or "0")
  if delta < 0 and -delta > have then delta = -have end
  if delta == 0 then return "" end
  if have + delta <= 0 then
    redis.call("HDEL", nodekey, field)
  else
    redis.call("HINCRBY", nodekey, field, delta)
  end
  local p = split(field)
  local kind, app = p[1], p[2]
  if kind == "s" then
    local key = app_key(prefix, app, "channels")
    local after = redis.call("HINCRBY", key, p[3], delta)
    if after <= 0 then redis.call("HDEL", key, p[3]) end
    if after - delta <= 0 and after > 0 then return "o" end
    if after <= 0 and after - delta > 0 then return "v" end
    return ""
  elseif kind == "p" then
    local pres = app_key(prefix, app, "presence:" .. p[3])
    local members = app_key(prefix, app, "members:" .. p[3])
    local after = redis.call("HINCRBY", pres, p[4], delta)
    if after <= 0 then
      redis.call("HDEL", pres, p[4])
      redis.call("HDEL", members, p[4])
      if after - delta > 0 then return "r" end
      return ""
    end
    if after - delta <= 0 then
      redis.call("HSET", members, p[4], info or "")
      return "a"
    end
    return ""
  elseif kind == "c" then
    local key = app_key(prefix, app, "connections")
    local after = redis.call("INCRBY", key, delta)
    if after <= 0 then redis.call("DEL", key) end
    return ""
  elseif kind == "u" then
    local key = app_key(prefix, app, "user:" .. p[4])
    if delta > 0 then
      redis.call("HSET", key, p[3], nodeid)
    else
      redis.call("HDEL", key, p[3])
    end
    return ""
  end
  return ""
end
"#;

/// `KEYS[1]` node hash; `ARGV`: prefix, node id, vacate delay (ms), a token for the leaves
/// this call holds back, then groups of five (field, delta, info, pub/sub channel, message). Returns, per group, `"<transition>:<count>"`: the transition of
/// `apply` (maybe empty) and, for `s` and `c` fields, the cluster-wide count after the change
/// (else empty). When a presence field's transition is `a` or `r` and a message is given, the
/// script publishes it: `member_added`/`member_removed` go out with the change that caused
/// them, so they are neither lost nor doubled when a reply is lost on the way back. With a
/// vacate delay, a leave (`v`, `r`) comes back as `v~`/`r~` (held: send its webhook only if
/// [`CONFIRM`] says so after the delay) and a join that cancels a held leave as `o!`/`a!`
/// (send nothing).
pub const APPLY: &str = r#"
local out = {}
local delay = tonumber(ARGV[3])
local i = 5
while i <= #ARGV do
  local field, delta, info = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local t = apply(ARGV[1], KEYS[1], ARGV[2], field, delta, info)
  if (t == "a" or t == "r") and ARGV[i + 4] ~= "" then
    redis.call("PUBLISH", ARGV[i + 3], ARGV[i + 4])
  end
  if delay > 0 and t ~= "" then
    -- The vacate delay, cluster-wide: a leave is held under a token; a join within the
    -- delay takes the token away, and then neither webhook is sent.
    local pending = ARGV[1] .. ":pending:" .. field
    if t == "v" or t == "r" then
      redis.call("SET", pending, ARGV[4], "PX", delay * 2 + 1000)
      t = t .. "~"
    elseif redis.call("DEL", pending) == 1 then
      t = t .. "!"
    end
  end
  local p = split(field)
  local count = ""
  if p[1] == "s" then
    count = redis.call("HGET", ARGV[1] .. ":app:" .. p[2] .. ":channels", p[3]) or "0"
  elseif p[1] == "c" then
    count = redis.call("GET", ARGV[1] .. ":app:" .. p[2] .. ":connections") or "0"
  end
  table.insert(out, t .. ":" .. count)
  i = i + 5
end
return out
"#;

/// Confirms a held leave after the vacate delay: `KEYS[1]` its pending key, `ARGV[1]` the
/// token it was held under. Returns 1 (send the webhook) unless a join took it away.
pub const CONFIRM: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("DEL", KEYS[1])
  return 1
end
return 0
"#;

/// Renews a node's lease and reads the cluster epoch (created if missing).
/// `KEYS[1]` nodes zset, `KEYS[2]` epoch; `ARGV`: node id, lease ms, candidate epoch.
/// Returns `{added, epoch}`: `added` is 1 when the node was not registered (first start,
/// reaped while unreachable, or Redis lost its data).
pub const HEARTBEAT: &str = r#"
redis.call("SET", KEYS[2], ARGV[3], "NX")
local epoch = redis.call("GET", KEYS[2])
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call("ZADD", KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return {added, epoch}
"#;

/// Removes one node whose lease expired, with all its contributions, in one step: only one
/// caller ever sees a given dead node. `KEYS[1]` nodes zset; `ARGV`: prefix, own node id.
/// Returns `{}` when no lease expired, else `{dead id, transitions...}` where each transition
/// is `"v␟app␟channel"` or `"r␟app␟channel␟user"`.
pub const REAP: &str = r#"
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now, "LIMIT", 0, 2)
local id = nil
for _, d in ipairs(dead) do
  if d ~= ARGV[2] then id = d; break end
end
if not id then return {} end
local nodekey = ARGV[1] .. ":node:" .. id
local fields = redis.call("HGETALL", nodekey)
local out = {id}
for i = 1, #fields, 2 do
  local field = fields[i]
  local tr = apply(ARGV[1], nodekey, id, field, -tonumber(fields[i + 1]), nil)
  if tr == "v" or tr == "r" then
    local p = split(field)
    if tr == "v" then
      table.insert(out, "v" .. SEP .. p[2] .. SEP .. p[3])
    else
      table.insert(out, "r" .. SEP .. p[2] .. SEP .. p[3] .. SEP .. p[4])
    end
  end
end
redis.call("DEL", nodekey)
redis.call("ZREM", KEYS[1], id)
return out
"#;

/// Appends an event to a channel's history and publishes it, in one step, so offset order is
/// delivery order on every node. `KEYS[1]` the stream, `KEYS[2]` its meta hash (epoch,
/// offset); `ARGV`: the event JSON, ttl ms, size, a candidate epoch (used when the stream has
/// none: new, unused for a day or lost), the pub/sub channel, the excluded-socket header. The
/// event gets `"position"` appended as its last member. Events expire after the ttl; the
/// position (epoch and offset) is kept for a day after the last publish or read (or the ttl if
/// longer). Returns `{epoch, offset}`.
pub const PUBLISH_HISTORY: &str = r#"
local META_TTL_MS = 86400000
local epoch = redis.call("HGET", KEYS[2], "epoch")
if not epoch then
  epoch = ARGV[4]
  redis.call("DEL", KEYS[1])
  redis.call("HSET", KEYS[2], "epoch", epoch, "offset", 0)
end
local offset = redis.call("HINCRBY", KEYS[2], "offset", 1)
local body = string.sub(ARGV[1], 1, -2) .. ',"position":{"epoch":"' .. epoch
  .. '","offset":' .. offset .. '}}'
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("XADD", KEYS[1], "MAXLEN", ARGV[3], "*", "o", offset, "e", body)
redis.call("XTRIM", KEYS[1], "MINID", tostring(now - tonumber(ARGV[2])))
redis.call("PEXPIRE", KEYS[1], ARGV[2])
-- The position outlives the events: a client that missed nothing during a quiet spell longer
-- than the ttl still recovers (with nothing to replay).
redis.call("PEXPIRE", KEYS[2], math.max(tonumber(ARGV[2]), META_TTL_MS))
redis.call("PUBLISH", ARGV[5], ARGV[6] .. body)
return {epoch, offset}
"#;

/// Reads a channel's position and the kept events after an offset. `KEYS` as for
/// [`PUBLISH_HISTORY`]; `ARGV`: since (empty: position only), limit, candidate epoch, ttl ms.
/// Returns `{epoch, offset, complete (1/0), events oldest first...}` as strings; `complete`
/// is 0 when some event after `since` is no longer kept, or `since` is ahead.
pub const READ_HISTORY: &str = r#"
local META_TTL_MS = 86400000
local epoch = redis.call("HGET", KEYS[2], "epoch")
if not epoch then
  epoch = ARGV[3]
  redis.call("DEL", KEYS[1])
  redis.call("HSET", KEYS[2], "epoch", epoch, "offset", 0)
end
-- Reading (a subscription) keeps the position alive too.
redis.call("PEXPIRE", KEYS[2], math.max(tonumber(ARGV[4]), META_TTL_MS))
local offset = tonumber(redis.call("HGET", KEYS[2], "offset"))
if ARGV[1] == "" then return {epoch, tostring(offset), "1"} end
local since = tonumber(ARGV[1])
if since > offset then return {epoch, tostring(offset), "0"} end
local want = offset - since
if want == 0 then return {epoch, tostring(offset), "1"} end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("XTRIM", KEYS[1], "MINID", tostring(now - tonumber(ARGV[4])))
local entries = redis.call("XREVRANGE", KEYS[1], "+", "-", "COUNT", want)
local complete = "1"
if #entries < want then complete = "0" end
local out = {epoch, tostring(offset), complete}
local limit = tonumber(ARGV[2])
for i = #entries, 1, -1 do
  if #out - 3 >= limit then break end
  local fields = entries[i][2]
  for j = 1, #fields, 2 do
    if fields[j] == "e" then table.insert(out, fields[j + 1]) end
  end
end
return out
"#;

/// The scripts, loaded once (invoked by SHA, sent in full only when Redis lost them).
pub struct Scripts {
    /// See [`APPLY`].
    pub apply: Script,
    /// See [`HEARTBEAT`].
    pub heartbeat: Script,
    /// See [`REAP`].
    pub reap: Script,
    /// See [`CONFIRM`].
    pub confirm: Script,
    /// See [`PUBLISH_HISTORY`].
    pub publish_history: Script,
    /// See [`READ_HISTORY`].
    pub read_history: Script,
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts::new()
    }
}

impl Scripts {
    /// Builds the scripts.
    pub fn new() -> Scripts {
        Scripts {
            apply: Script::new(&format!("{HELPERS}\n{APPLY}")),
            heartbeat: Script::new(HEARTBEAT),
            reap: Script::new(&format!("{HELPERS}\n{REAP}")),
            confirm: Script::new(CONFIRM),
            publish_history: Script::new(PUBLISH_HISTORY),
            read_history: Script::new(READ_HISTORY),
        }
    }
}
