-- Appended to wrk-report.lua by `strait-bench compare` for the client-churn row: every 20th
-- request of a wrk thread asks the server to close its connection, so wrk opens a new one —
-- clients that come and go, ~20 requests each.
local sent = 0
request = function()
  sent = sent + 1
  if sent % 20 == 0 then
    return wrk.format(nil, nil, { ["Connection"] = "close" })
  end
  return wrk.format()
end
