-- load_edits.lua — the wrk script of bench/load_bench.sh: POSTs one image to
-- /v1/edits, cycling through the given concepts (each thread starts at a
-- different one, so concurrent requests mix them), and reads the server's
-- own timings from every response (Server-Timing, X-E2gan-Batch-Size).
--
--   wrk … -s load_edits.lua URL -- IMAGE MEDIA_TYPE CONCEPT [CONCEPT…]
--
-- done() prints one line for load_bench.sh:
--   RESULT requests errors req_per_s p50_ms p99_ms mean_ms compute_ms
--          queue_ms decode_ms encode_ms total_ms mean_batch
-- p50, p99 and mean are the client's latencies; compute, queue, decode,
-- encode and total are the means of the server's Server-Timing stages over
-- the successful responses (compute is the engine call that held the
-- request, its whole batch).  Means, unlike medians, add up, so the mean
-- latency minus the mean server total is the time spent outside the server's
-- handler (HTTP and the client).

local threads = {}
-- Server-Timing stages; each thread sums each in a global of that name.
local STAGES = { "compute", "queue", "decode", "encode", "total" }

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

-- per thread
local concepts, next_concept = {}, 1
for _, name in ipairs(STAGES) do _G[name] = 0 end
timed, batch_sum, bad = 0, 0, 0

function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = args[2]
  for i = 3, #args do concepts[#concepts + 1] = args[i] end
  assert(#concepts > 0, "load_edits.lua: no concept given")
  next_concept = id % #concepts + 1
end

function request()
  local path = "/v1/edits?concept=" .. concepts[next_concept]
  next_concept = next_concept % #concepts + 1
  return wrk.format(nil, path)
end

function response(status, headers, body)
  local timing = headers["Server-Timing"]
  if status ~= 200 or not timing then
    bad = bad + 1
    return
  end
  for _, name in ipairs(STAGES) do
    _G[name] = _G[name] + (tonumber(timing:match(name .. ";dur=([%d.]+)")) or 0)
  end
  timed = timed + 1
  batch_sum = batch_sum + (tonumber(headers["X-E2gan-Batch-Size"]) or 0)
end

function done(summary, latency, requests)
  local sums, ok, batches, bad_total = {}, 0, 0, 0
  for _, name in ipairs(STAGES) do sums[name] = 0 end
  for _, thread in ipairs(threads) do
    for _, name in ipairs(STAGES) do sums[name] = sums[name] + thread:get(name) end
    ok = ok + thread:get("timed")
    batches = batches + thread:get("batch_sum")
    bad_total = bad_total + thread:get("bad")
  end
  local n = math.max(ok, 1)
  local e = summary.errors
  local errors = math.max(bad_total, e.status) + e.connect + e.read + e.write + e.timeout
  io.write(string.format("RESULT %d %d %.2f %.1f %.1f %.1f %.1f %.2f %.2f %.2f %.1f %.2f\n",
    summary.requests, errors, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.mean / 1e3,
    sums.compute / n, sums.queue / n, sums.decode / n, sums.encode / n, sums.total / n,
    batches / n))
end
