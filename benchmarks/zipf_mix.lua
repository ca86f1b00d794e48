-- zipf_mix.lua: a music-streaming request mix for wrk, Zipf-distributed over a catalog.
--
--   wrk -t1 -c16 -d30s --latency -s benchmarks/zipf_mix.lua http://127.0.0.1:8080 -- \
--       catalog=/tmp/catalog.tsv [prefix=/music] [seed=1] [mix=audio:60,image:20,json:20] \
--       [alpha=audio:0.9,image:0.8,json:0.9] [chunk=524288]
--
-- catalog: the file benchmarks/common.py writes (write_catalog_file): one object a line,
--   "kind<TAB>/path<TAB>size", in popularity order within each kind (kind: audio, image, json).
-- prefix: put in front of every path (e.g. "/bucket" when wrk talks to S3 directly).
-- mix: the share of requests per kind. The default is our reading of the reference deployment
--   (REFERENCE.md counts "song requests"; a play fetches its metadata (1 JSON), its album art
--   (1 image) and the audio with Range requests, ~3 player-buffer chunks on average since many
--   plays are skipped or seek): audio 60 %, images 20 %, JSON 20 %.
-- alpha: the Zipf exponent per kind (rank r has weight 1 / r^alpha).
-- Requests: audio "Range: bytes=S-E" of `chunk` bytes (40 % at the start of the track, as a
--   play begins; 60 % at a chunk-aligned offset anywhere in it: playback going on, seeks);
--   images "Accept: image/avif,image/webp,image/*,*/*;q=0.8" (a browser's); JSON
--   "Accept-Encoding: gzip".
-- Environment (read when the script loads, in every Lua state wrk makes):
--   ZIPF_MIX_THINK_MS=N  each connection waits an exponentially distributed time of mean N ms
--                        before each request (an open-ish load instead of back-to-back);
--   ZIPF_MIX_COUNT=1     count answers (status, which cache answered: the first Cache-Status
--                        member with "hit", else X-Cache-Status HIT, else "miss"); this makes
--                        wrk read the bodies into Lua, so it costs client CPU.
-- done() prints one line "BENCH_JSON {...}": requests per kind, the counts above, and the
-- latency mean/p50/p90/p99/max in ms (wrk's own histogram, all threads).

local catalog_path = nil
local prefix = ""
local seed = 1
local chunk = 524288
local mix = { audio = 60, image = 20, json = 20 }
local alpha = { audio = 0.9, image = 0.8, json = 0.9 }
local KINDS = { "audio", "image", "json" }

local objects = {}   -- kind -> { {path=, size=}, ... } in rank order
local cumulative = {} -- kind -> cumulative Zipf weights
local kind_cum = {}   -- cumulative mix shares over KINDS

-- Counters are flat numeric globals ("n_<group>_<name>"): this wrk (4.1) crashes when
-- thread:get() copies a table, numbers are fine. The names are fixed (see COUNTERS).
local COUNTERS = {
  requests = { "audio", "image", "json" },
  status = { "200", "206", "304", "4xx", "5xx", "other" },
  answered = { "edge", "regional", "shield", "hit", "miss", "other" },
}
for group, names in pairs(COUNTERS) do
  for _, name in ipairs(names) do _G["n_" .. group .. "_" .. name] = 0 end
end

local function count(group, name)
  local key = "n_" .. group .. "_" .. name
  if _G[key] == nil then key = "n_" .. group .. "_other" end
  _G[key] = _G[key] + 1
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

local function parse_pairs(text, into)
  for name, value in string.gmatch(text, "([%w_]+):([%d.]+)") do
    into[name] = tonumber(value)
  end
end

local function load_catalog(path)
  local f = assert(io.open(path, "r"), "zipf_mix.lua: cannot open catalog " .. path)
  for line in f:lines() do
    local kind, p, size = string.match(line, "^(%w+)\t(%S+)\t(%d+)$")
    if kind then
      objects[kind] = objects[kind] or {}
      table.insert(objects[kind], { path = prefix .. p, size = tonumber(size) })
    end
  end
  f:close()
end

function init(args)
  for _, arg in ipairs(args) do
    local name, value = string.match(arg, "^([%w_]+)=(.*)$")
    if name == "catalog" then catalog_path = value
    elseif name == "prefix" then prefix = value
    elseif name == "seed" then seed = tonumber(value)
    elseif name == "chunk" then chunk = tonumber(value)
    elseif name == "mix" then mix = {}; parse_pairs(value, mix)
    elseif name == "alpha" then parse_pairs(value, alpha)
    else error("zipf_mix.lua: unknown argument " .. arg) end
  end
  assert(catalog_path, "zipf_mix.lua: catalog=PATH is required")
  load_catalog(catalog_path)
  local total = 0
  for _, kind in ipairs(KINDS) do
    if not objects[kind] then mix[kind] = 0 end
    total = total + (mix[kind] or 0)
  end
  assert(total > 0, "zipf_mix.lua: no object of any kind in the mix")
  local acc = 0
  for i, kind in ipairs(KINDS) do
    acc = acc + (mix[kind] or 0) / total
    kind_cum[i] = acc
    if objects[kind] then
      local c, sum = {}, 0
      for r = 1, #objects[kind] do
        sum = sum + 1 / (r ^ (alpha[kind] or 1))
        c[r] = sum
      end
      for r = 1, #c do c[r] = c[r] / sum end
      cumulative[kind] = c
    end
  end
  math.randomseed(seed * 7919 + (thread_no or 1))
end

local function pick_rank(c)
  local x = math.random()
  local lo, hi = 1, #c
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if c[mid] < x then lo = mid + 1 else hi = mid end
  end
  return lo
end

local function pick_kind()
  local x = math.random()
  for i, kind in ipairs(KINDS) do
    if x <= kind_cum[i] and (mix[kind] or 0) > 0 then return kind end
  end
  for i = #KINDS, 1, -1 do
    if (mix[KINDS[i]] or 0) > 0 then return KINDS[i] end
  end
end

local IMAGE_ACCEPT = "image/avif,image/webp,image/*,*/*;q=0.8"

function request()
  local kind = pick_kind()
  local object = objects[kind][pick_rank(cumulative[kind])]
  count("requests", kind)
  local headers = {}
  if kind == "audio" then
    local start = 0
    local chunks = math.floor((object.size - 1) / chunk) + 1
    if math.random() >= 0.4 and chunks > 1 then
      start = math.random(0, chunks - 1) * chunk
    end
    local stop = math.min(object.size - 1, start + chunk - 1)
    headers["Range"] = "bytes=" .. start .. "-" .. stop
  elseif kind == "image" then
    headers["Accept"] = IMAGE_ACCEPT
  else
    headers["Accept-Encoding"] = "gzip"
  end
  return wrk.format("GET", object.path, headers)
end

local think = tonumber(os.getenv("ZIPF_MIX_THINK_MS") or "0") or 0
if think > 0 then
  function delay()
    return -math.log(1 - math.random()) * think
  end
end

local function answered_by(headers)
  local cache_status, x_cache = nil, nil
  for name, value in pairs(headers) do
    local lower = string.lower(name)
    if lower == "cache-status" then cache_status = value
    elseif lower == "x-cache-status" then x_cache = value end
  end
  if cache_status then
    for member in string.gmatch(cache_status, "[^,]+") do
      local node = string.match(member, "^%s*([^;%s]+)")
      if string.find(";" .. member .. ";", ";%s*hit%s*;") then
        local name = string.gsub(string.match(node or "?", "^([^-]+)") or "?", "\"", "")
        return name
      end
    end
    return "miss"
  end
  if x_cache and string.upper(x_cache) == "HIT" then return "hit" end
  return "miss"
end

if os.getenv("ZIPF_MIX_COUNT") == "1" then
  function response(status, headers, body)
    local s = tostring(status)
    if status >= 500 then s = "5xx" elseif status >= 400 then s = "4xx" end
    count("status", s)
    local tier = answered_by(headers)
    if tier ~= "edge" and tier ~= "regional" and tier ~= "shield" and tier ~= "miss" then
      tier = "hit"  -- a single cache (nginx, Varnish, one node) that answered from its store
    end
    count("answered", tier)
  end
end

local function encode(value)
  if type(value) == "table" then
    local parts = {}
    for k, v in pairs(value) do
      table.insert(parts, string.format("%q:%s", tostring(k), encode(v)))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif type(value) == "number" then
    if value == math.floor(value) and math.abs(value) < 2 ^ 53 then
      return string.format("%d", value)
    end
    return string.format("%.6g", value)
  end
  return string.format("%q", tostring(value))
end

function done(summary, latency, requests)
  local total = {}
  for group, names in pairs(COUNTERS) do
    total[group] = {}
    for _, name in ipairs(names) do
      local sum = 0
      for _, thread in ipairs(threads) do
        sum = sum + (thread:get("n_" .. group .. "_" .. name) or 0)
      end
      total[group][name] = sum
    end
  end
  total.latency_ms = {
    mean = latency.mean / 1000,
    p50 = latency:percentile(50) / 1000,
    p75 = latency:percentile(75) / 1000,
    p90 = latency:percentile(90) / 1000,
    p95 = latency:percentile(95) / 1000,
    p98 = latency:percentile(98) / 1000,
    p99 = latency:percentile(99) / 1000,
    max = latency.max / 1000,
  }
  total.summary = {
    requests = summary.requests,
    bytes = summary.bytes,
    duration_s = summary.duration / 1e6,
    errors_status = summary.errors.status,
    errors_socket = summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
  }
  io.write("BENCH_JSON " .. encode(total) .. "\n")
end
