-- wrk script: POST prepared bodies to the URL's path, in rotation.
--   BENCH_BODIES  folder of 0.bin, 1.bin, ... (bench/load.py writes them), and for a body
--                 that needs headers of its own, N.headers ("Name: value" lines)
--   BENCH_TYPE    the Content-Type header, boundary included
-- Requests are formatted once in init(), so per request wrk only copies bytes: the Lua
-- side must cost far less than the servers it measures.
local prepared = {}
local next_index = 0

function init(args)
  local folder, content_type = os.getenv("BENCH_BODIES"), os.getenv("BENCH_TYPE")
  local n = 0
  while true do
    local file = io.open(folder .. "/" .. n .. ".bin", "rb")
    if not file then break end
    local body = file:read("*a")
    file:close()
    local headers = { ["Content-Type"] = content_type }
    local extra = io.open(folder .. "/" .. n .. ".headers", "r")
    if extra then
      for line in extra:lines() do
        local name, value = line:match("^([^:]+):%s*(.-)%s*$")
        if name then headers[name] = value end
      end
      extra:close()
    end
    n = n + 1
    prepared[n] = wrk.format("POST", nil, headers, body)
  end
  assert(n > 0, "no bodies in " .. folder)
end

function request()
  next_index = next_index % #prepared + 1
  return prepared[next_index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, '
      .. '"timeout": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
