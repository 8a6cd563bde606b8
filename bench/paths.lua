-- wrk script of bench/scale.sh: GET of paths spread at random over the lines of
-- $BENCH_TARGETS ("<api key> <org> <path>"). done() prints one machine-readable line:
-- WRK_RESULT key=value ... (the format of credentials.lua).

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

local reqs = {}

function init(args)
  for line in io.lines(os.getenv("BENCH_TARGETS")) do
    local key, org, path = line:match("^(%S+) (%S+) (%S+)$")
    if key then
      reqs[#reqs + 1] = wrk.format("GET", path,
        { ["Authorization"] = "Bearer " .. key, ["X-Organization-Id"] = org })
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
