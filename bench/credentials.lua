-- wrk script of bench/run.sh and bench/scale.sh: GET /api/oauth/credentials/{name},
-- spread at random over the targets in $BENCH_TARGETS (lines "<api key> <org> <name>",
-- written by examples/bench_seed.rs); a third field starting with "/" is the whole path
-- instead (e.g. a connections page). Optional: $BENCH_WORKFLOW_ID adds an X-Workflow-Id
-- header.
-- Requests are formatted once per thread, so wrk spends its CPU on the network.
-- done() prints one machine-readable line: WRK_RESULT key=value ...

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

local reqs = {}

function init(args)
  local workflow = os.getenv("BENCH_WORKFLOW_ID")
  for line in io.lines(os.getenv("BENCH_TARGETS")) do
    local key, org, name = line:match("^(%S+) (%S+) (%S+)$")
    if key then
      local headers = { ["Authorization"] = "Bearer " .. key, ["X-Organization-Id"] = org }
      if workflow and workflow ~= "" then headers["X-Workflow-Id"] = workflow end
      local path = name:sub(1, 1) == "/" and name or ("/api/oauth/credentials/" .. name)
      reqs[#reqs + 1] = wrk.format("GET", path, headers)
    end
  end
  math.randomseed(4242 + (thread_id or 0))
end

function request()
  return reqs[math.random(#reqs)]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d mean_us=%.0f max_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
