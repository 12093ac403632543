// The forecast-and-window page: sends the workload to POST /api/v1/optimize, fetches each zone's
// forecast from GET /api/v1/forecast, and draws them with uPlot. Everything shown comes from those
// two answers; the service's error messages are shown as it wrote them. On load it asks for the
// form's defaults (the service's default zones) and lists the signals GET /api/v1/zones names,
// unless the service needs an API key.
"use strict";
(function () {
  var HOUR = 3600;
  var MAX_FORECAST_HOURS = 744; // the API's limit on ?hours=
  var COLORS = {
    measured: "#4d4d4d", forecast: "#1f5fa8", estimated: "#a84a00", past: "rgba(60, 60, 60, 0.10)",
    window: "rgba(26, 152, 80, 0.28)", windowEdge: "#137040",
    baseline: "rgba(120, 60, 140, 0.16)", baselineEdge: "#6a3d7a", now: "#333"
  };
  var charts = [];
  // Each question supersedes the one before (a click during the first drawing on load): only the
  // latest may touch the page, and the earlier one's calls are cancelled.
  var current = { run: 0, abort: null };

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function keyRequired() { return document.body.getAttribute("data-api-key-required") === "true"; }

  function epoch(text) { return Date.parse(text) / 1000; }

  function utc(seconds) {
    return new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  function fromNow(seconds) {
    var minutes = Math.round((seconds - Date.now() / 1000) / 60);
    if (minutes <= 0) return "now";
    var h = Math.floor(minutes / 60), m = minutes % 60;
    return "in " + (h ? h + " h " : "") + m + " min";
  }

  function grams(value) {
    return value >= 10000 ? (value / 1000).toFixed(2) + " kg" : value.toFixed(1) + " g";
  }

  // What a gram counts, read from an intensity's unit ("gCO2eq/kWh": CO2eq, "gCO2/kWh": CO2 alone).
  function gas(units) {
    var m = /^g(.+)\/kWh$/.exec(units || "");
    return (m ? m[1] : "CO2eq").replace("CO2", "CO\u2082");
  }

  // The provenance of the answer's first scheduled workload: one request reads one signal, so
  // every workload in it has the same signal, units and attribution.
  function provenanceOf(answer) {
    var scheduled = answer.results
      ? answer.results.filter(function (r) { return r.status === "scheduled"; }) : [answer];
    return scheduled.length && scheduled[0].provenance ? scheduled[0].provenance : null;
  }

  // The signal chosen in the form, or null for the service's default (the request then names none).
  function chosenSignal() {
    var option = $("signal").selectedOptions[0];
    return option && option.value && option.getAttribute("data-default") !== "true" ? option.value : null;
  }

  // Fill the signal list from GET /api/v1/zones. Until that answers (or when it cannot: a key is
  // needed first, or an error), the one option is the service's default and no signal is sent.
  var signals = { loaded: false, asking: false };
  function loadSignals() {
    if (signals.loaded || signals.asking) return;
    signals.asking = true;
    call("GET", "/api/v1/zones").then(function (got) {
      signals.asking = false;
      var list = got.ok && got.body && Array.isArray(got.body.signals) ? got.body.signals : [];
      if (!list.length) return;
      var select = $("signal");
      select.replaceChildren();
      list.forEach(function (s) {
        var option = el("option", { value: s.name, title: s.description }, s.name + " (" + s.provider + ")");
        if (s["default"]) {
          option.setAttribute("data-default", "true");
          option.selected = true;
        }
        select.appendChild(option);
      });
      signals.loaded = true;
    }, function () { signals.asking = false; });
  }

  // The form's fields as a workload; zones pass through as typed (the API validates them).
  function workloadFromForm() {
    var workload = {};
    var zones = $("zones").value.split(",").map(function (z) { return z.trim(); })
      .filter(function (z) { return z.length > 0; });
    if (zones.length) workload.zones = zones;
    var duration = $("duration").value.trim();
    workload.duration = /^\d+$/.test(duration) ? Number(duration) : duration;
    var delay = $("max-delay").value.trim();
    if (delay !== "") workload.max_delay = /^\d+$/.test(delay) ? "PT" + delay + "H" : delay;
    var power = $("power").value.trim();
    if (power !== "") workload.power_kw = Number(power);
    if ($("interruptible").checked) workload.interruptible = true;
    var signal = chosenSignal();
    if (signal) workload.signal = signal;
    return workload;
  }

  function call(method, path, body, signal) {
    var headers = { "Accept": "application/json" };
    var key = $("api-key").value.trim();
    if (key) headers["X-API-Key"] = key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, { method: method, headers: headers, body: body, credentials: "omit",
                         signal: signal })
      .then(function (response) {
        return response.text().then(function (text) {
          var parsed = null;
          try { parsed = JSON.parse(text); } catch (e) { parsed = null; }
          return { ok: response.ok, status: response.status, body: parsed, text: text };
        });
      });
  }

  // The service's error envelope, word for word: status, code, message, then each field's detail.
  function describeError(answer) {
    var error = answer.body && answer.body.error;
    if (!error) return ["HTTP " + answer.status + ": " + (answer.text || "no answer body").slice(0, 500)];
    var lines = ["HTTP " + answer.status + " " + error.code + ": " + error.message];
    (error.details || []).forEach(function (d) { lines.push(d.field + ": " + d.message); });
    return lines;
  }

  function showError(lines) {
    var box = $("error");
    box.replaceChildren();
    var list = el("ul");
    lines.forEach(function (line) { list.appendChild(el("li", {}, line)); });
    box.appendChild(list);
    box.hidden = false;
  }

  function reset() {
    charts.forEach(function (c) { c.plot.destroy(); });
    charts = [];
    $("charts").replaceChildren();
    $("error").hidden = true;
    $("answer").hidden = true;
    $("facts").replaceChildren();
    $("chunks").replaceChildren();
    $("chunks-box").hidden = true;
    $("saving").textContent = "";
    $("signal-used").textContent = "";
    $("attribution").textContent = "";
    $("attribution").hidden = true;
  }

  // The button stays enabled while busy: pressing it again asks again (the earlier question is
  // cancelled), rather than being ignored.
  function busy(on, text, failed) {
    $("result").setAttribute("aria-busy", on ? "true" : "false");
    $("status").textContent = text || "";
    $("status").classList.toggle("failed", !!failed);
  }

  // What to shade, per answer: the windows (or chunks) run, and the baseline compared against.
  function plans(answer) {
    var scheduled = answer.results
      ? answer.results.filter(function (r) { return r.status === "scheduled"; }) : [answer];
    return scheduled.map(function (r) {
      var intervals = r.chunks ? r.chunks.map(function (c) { return [epoch(c.start), epoch(c.end)]; })
        : [[epoch(r.start), epoch(r.end)]];
      return { result: r, zone: r.zone, intervals: intervals,
               baseline: r.baseline ? { zone: r.baseline.zone, start: epoch(r.baseline.start),
                                        end: epoch(r.baseline.end) } : null };
    });
  }

  function savingText(r) {
    var what = gas(r.provenance && r.provenance.units);
    // The baseline is what running at once would emit: from the earliest start, in the first zone.
    var where = r.baseline ? "starting at once (" + utc(epoch(r.baseline.start)) + ") in " + r.baseline.zone
      : "starting at once";
    if (r.saving_grams !== null && r.saving_grams !== undefined) {
      var text = "Saves " + grams(r.saving_grams) + " " + what;
      if (r.saving_percent !== null && r.saving_percent !== undefined) text += " (" + r.saving_percent.toFixed(1) + " %)";
      return text + " compared with " + where + ": " + grams(r.emissions_grams) + " instead of " +
        grams(r.baseline_emissions_grams) + ".";
    }
    if (r.saving_percent !== null && r.saving_percent !== undefined) {
      return "Saves " + r.saving_percent.toFixed(1) + " % of the carbon intensity compared with " + where +
        " (give power or energy for grams).";
    }
    return "No baseline to compare with.";
  }

  function showAnswer(answer) {
    var facts = $("facts");
    var source = provenanceOf(answer);
    if (answer.results) {
      var s = answer.summary;
      // saving_grams is null when no workload gave power or energy: no grams to claim then.
      $("saving").textContent = "Batch: " + s.scheduled + " of " + s.workloads + " scheduled" +
        (s.saving_grams === null || s.saving_grams === undefined ? "."
          : "; saves " + grams(s.saving_grams) + " " + gas(source && source.units) + " in all.");
      answer.results.forEach(function (r) {
        facts.appendChild(el("li", {}, (r.id || "workload") + ": " + (r.status === "scheduled"
          ? r.zone + ", " + utc(epoch(r.start)) + " to " + utc(epoch(r.end)) + ". " + savingText(r)
          : "unschedulable, " + r.code + ": " + r.reason)));
      });
    } else {
      $("saving").textContent = savingText(answer);
      facts.appendChild(el("li", {}, "Run in " + answer.zone + " from " + utc(epoch(answer.start)) +
        " to " + utc(epoch(answer.end)) + " (" + fromNow(epoch(answer.start)) + "), " +
        answer.duration_minutes + " min."));
      var intensity = "Mean carbon intensity " + answer.carbon_intensity.toFixed(1) + " " +
        answer.provenance.units;
      if (answer.baseline) intensity += ", against " + answer.baseline.carbon_intensity.toFixed(1) +
        " starting at once in " + answer.baseline.zone;
      facts.appendChild(el("li", {}, intensity + "."));
      var p = answer.provenance;
      facts.appendChild(el("li", {}, "Data: " + p.provider + ", forecast to " + utc(epoch(p.forecast_end)) +
        (p.stale ? " (stale copy: the provider is failing)" : "") + "."));
      if (p.estimated && p.estimated_part) {
        facts.appendChild(el("li", {}, "Rests partly on estimates: " + p.estimated_part.minutes +
          " min from " + utc(epoch(p.estimated_part.start)) + " lie past the forecast" +
          (p.replan_at ? "; ask again after " + utc(epoch(p.replan_at)) : "") + "."));
      }
      if (answer.chunks) {
        answer.chunks.forEach(function (c) {
          $("chunks").appendChild(el("li", {}, utc(epoch(c.start)) + " to " + utc(epoch(c.end)) +
            " (" + c.duration_minutes + " min)"));
        });
        $("chunks-box").hidden = false;
      }
    }
    (answer.unavailable_zones || []).forEach(function (z) {
      facts.appendChild(el("li", {}, "No data for " + z.zone + " (" + z.code + "): " + z.message));
    });
    if (source) {
      $("signal-used").textContent = "Signal: " + source.signal + " (" + source.provider +
        "), intensities in " + source.units + ".";
      if (source.attribution) {
        $("attribution").textContent = source.attribution;
        $("attribution").hidden = false;
      }
    }
    $("answer").hidden = false;
  }

  // Zones to draw: those asked for (as typed), then any zone the answer names.
  function zonesToDraw(request, planList) {
    var zones = [];
    function add(z) { if (typeof z === "string" && zones.indexOf(z) < 0) zones.push(z); }
    var workloads = request && Array.isArray(request.workloads) ? request.workloads : [request];
    workloads.forEach(function (w) { if (w && Array.isArray(w.zones)) w.zones.forEach(add); });
    planList.forEach(function (p) { add(p.zone); if (p.baseline) add(p.baseline.zone); });
    return zones;
  }

  // ISO 8601 durations as the API takes them (PnWnDTnHnMnS), or whole minutes; seconds, or NaN.
  function seconds(duration) {
    if (typeof duration === "number") return duration * 60;
    var m = /^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$/.exec(String(duration).trim());
    if (!m) return NaN;
    var parts = m.slice(1).map(function (v) { return v ? Number(v) : 0; });
    return parts[0] * 604800 + parts[1] * 86400 + parts[2] * 3600 + parts[3] * 60 + parts[4];
  }

  // Where a workload's allowed window ends (its last possible finish), as far as the request says.
  function allowedEnd(w) {
    if (!w || typeof w !== "object") return NaN;
    var earliest = w.earliest_start ? epoch(w.earliest_start) : Date.now() / 1000;
    var length = seconds(w.duration);
    if (w.deadline) return epoch(w.deadline);
    if (w.latest_start) return epoch(w.latest_start) + length;
    if (w.max_delay) return earliest + seconds(w.max_delay) + length;
    return NaN;
  }

  // Enough hours to show every allowed window, chosen window and baseline (at least a day).
  function hoursToCover(request, planList) {
    var until = Date.now() / 1000 + 24 * HOUR;
    var workloads = request && Array.isArray(request.workloads) ? request.workloads : [request];
    workloads.forEach(function (w) {
      var end = allowedEnd(w);
      if (isFinite(end)) until = Math.max(until, end);
    });
    planList.forEach(function (p) {
      p.intervals.forEach(function (i) { until = Math.max(until, i[1]); });
      if (p.baseline) until = Math.max(until, p.baseline.end);
    });
    var hours = Math.ceil((until - Date.now() / 1000) / HOUR) + 1;
    return Math.min(MAX_FORECAST_HOURS, Math.max(1, hours));
  }

  // Each point of a zone's answer with what it is: measured (history), forecast, or estimated
  // (past the provider's forecast; in the history, a missing measurement held at the one before).
  function pointsOf(forecast) {
    var history = (forecast.history || []).map(function (p) {
      return { t: epoch(p.datetime), v: p.carbon_intensity, kind: p.estimated ? "held" : "measured" };
    });
    return history.concat(forecast.forecast.map(function (p) {
      return { t: epoch(p.datetime), v: p.carbon_intensity, kind: p.estimated ? "estimated" : "forecast" };
    }));
  }

  var SERIES_KINDS = [["measured", "held"], ["forecast"], ["estimated"]];

  // uPlot data for a step chart: one series per kind, null where another holds; a series runs on to
  // where the next begins (a vertical join), and a last x closes the final step.
  function chartData(points, step) {
    var xs = points.map(function (p) { return p.t; });
    xs.push(xs[xs.length - 1] + step);
    var ys = SERIES_KINDS.map(function (kinds) {
      var mine = function (p) { return p && kinds.indexOf(p.kind) >= 0; };
      var values = points.map(function (p, i) {
        return mine(p) || (i > 0 && mine(points[i - 1])) ? p.v : null;
      });
      var last = points[points.length - 1];
      values.push(mine(last) ? last.v : null);
      return values;
    });
    return [xs].concat(ys);
  }

  function band(u, from, to, fill, edge) {
    var ctx = u.ctx, box = u.bbox;
    var x0 = Math.max(box.left, u.valToPos(from, "x", true));
    var x1 = Math.min(box.left + box.width, u.valToPos(to, "x", true));
    if (x1 <= x0) return null;
    ctx.save();
    ctx.fillStyle = fill;
    ctx.fillRect(x0, box.top, x1 - x0, box.height);
    if (edge) {
      ctx.strokeStyle = edge;
      ctx.lineWidth = 2;
      ctx.setLineDash([]);
      ctx.strokeRect(x0, box.top, x1 - x0, box.height);
    }
    ctx.restore();
    return [Math.round(x0), Math.round(x1), Math.round(box.top), Math.round(box.top + box.height)];
  }

  function drawChart(forecast, zone, planList, figure) {
    var units = forecast.provenance.units;
    var mine = planList.filter(function (p) { return p.zone === zone; });
    var baselines = planList.filter(function (p) { return p.baseline && p.baseline.zone === zone; });
    var holder = el("div", { "class": "chart", role: "img" });
    figure.appendChild(holder);
    var width = Math.max(280, figure.clientWidth - 4);
    var options = {
      width: width, height: Math.round(Math.min(320, Math.max(220, width * 0.45))),
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      scales: { x: { time: true } },
      // Hours on a 24-hour clock, with the date under each day's first tick.
      axes: [{ stroke: "#222", grid: { stroke: "#e2e2e2" },
               values: [[86400, "{DD} {MMM}", null, null, null, null, null, null, 1],
                        [3600, "{HH}:{mm}", "\n{DD} {MMM}", null, "\n{DD} {MMM}", null, null, null, 1],
                        [60, "{HH}:{mm}", "\n{DD} {MMM}", null, "\n{DD} {MMM}", null, null, null, 1]] },
             { stroke: "#222", grid: { stroke: "#e2e2e2" }, size: 55, label: units }],
      legend: { show: false },
      series: [
        { label: "time (UTC)" },
        { label: "measured", stroke: COLORS.measured, width: 2, paths: uPlot.paths.stepped({ align: 1 }) },
        { label: "forecast", stroke: COLORS.forecast, width: 2, paths: uPlot.paths.stepped({ align: 1 }) },
        { label: "estimated", stroke: COLORS.estimated, width: 2, dash: [6, 4],
          paths: uPlot.paths.stepped({ align: 1 }) }
      ],
      hooks: {
        drawClear: [function (u) {
          var now = Date.now() / 1000, box = u.bbox;
          band(u, u.scales.x.min, now, COLORS.past, null);
          var drawn = [];
          baselines.forEach(function (p) { band(u, p.baseline.start, p.baseline.end, COLORS.baseline, COLORS.baselineEdge); });
          mine.forEach(function (p) {
            p.intervals.forEach(function (i) {
              var at = band(u, i[0], i[1], COLORS.window, COLORS.windowEdge);
              if (at) drawn.push(at.join(" "));
            });
          });
          // Where the chosen window landed on the canvas (device pixels): what a test inspects.
          figure.setAttribute("data-window-px", drawn.join(","));
          var xNow = u.valToPos(now, "x", true);
          if (xNow >= box.left && xNow <= box.left + box.width) {
            u.ctx.save();
            u.ctx.strokeStyle = COLORS.now;
            u.ctx.setLineDash([2, 3]);
            u.ctx.beginPath();
            u.ctx.moveTo(xNow, box.top);
            u.ctx.lineTo(xNow, box.top + box.height);
            u.ctx.stroke();
            u.ctx.restore();
          }
        }]
      }
    };
    var points = pointsOf(forecast);
    var plot = new uPlot(options, chartData(points, forecast.step_seconds), holder);
    figure.setAttribute("data-units", units); // the y axis' label, drawn on the canvas: for a test
    charts.push({ plot: plot, figure: figure });
    var values = points.map(function (p) { return p.v; });
    var count = function (kind) { return points.filter(function (p) { return p.kind === kind; }).length; };
    holder.setAttribute("aria-label", "Carbon intensity in " + zone + " from " + utc(points[0].t) + ": " +
      count("measured") + " measured, " + count("forecast") + " forecast and " + count("estimated") +
      " estimated hours, from " +
      Math.min.apply(null, values).toFixed(0) + " to " + Math.max.apply(null, values).toFixed(0) +
      " " + units + (mine.length ? "; the chosen window is shaded green" : ""));
    figure.appendChild(dataTable(points, units));
  }

  // The chart's numbers as a table, for screen readers and for anyone who wants them.
  var KIND_WORDS = { measured: "measured", held: "no measurement (previous held)",
                     forecast: "forecast", estimated: "estimated" };

  // The chart's numbers as a table, for screen readers and for anyone who wants them.
  function dataTable(points, units) {
    var details = el("details");
    details.appendChild(el("summary", {}, "Data table"));
    var table = el("table");
    var head = el("tr");
    ["Hour (UTC)", units, "Kind"].forEach(function (t) { head.appendChild(el("th", { scope: "col" }, t)); });
    table.appendChild(head);
    points.forEach(function (p) {
      var row = el("tr");
      row.appendChild(el("td", {}, utc(p.t)));
      row.appendChild(el("td", {}, p.v.toFixed(1)));
      row.appendChild(el("td", {}, KIND_WORDS[p.kind]));
      table.appendChild(row);
    });
    details.appendChild(table);
    return details;
  }

  // Each zone's chart; resolves to the list of charts that could not be drawn, each as
  // "zone: what the service (or the network) said".
  function drawZones(request, answer, run) {
    var planList = plans(answer);
    var zones = zonesToDraw(request, planList);
    var hours = hoursToCover(request, planList);
    // The charts show the signal the plan was made on: the answer's (the one asked for, in the form
    // or in pasted JSON), or, when no workload was scheduled, the one the request named.
    var source = provenanceOf(answer);
    var planned = source ? source.signal
      : request && typeof request.signal === "string" ? request.signal : null;
    var query = "&hours=" + hours + "&history=true" +
      (planned ? "&signal=" + encodeURIComponent(planned) : "");
    return Promise.all(zones.map(function (zone) {
      var figure = el("figure", { "class": "zone", "data-zone": zone });
      figure.appendChild(el("figcaption", {}, zone + (planList.some(function (p) { return p.zone === zone; })
        ? ": chosen zone" : "")));
      $("charts").appendChild(figure);
      function refused(text) {
        figure.appendChild(el("p", { "class": "error", role: "alert" }, text));
        return zone + ": " + text;
      }
      return call("GET", "/api/v1/forecast?zone=" + encodeURIComponent(zone) + query, undefined, run.signal)
        .then(function (got) {
          if (run.id !== current.run) return null;
          if (!got.ok) return refused(describeError(got).join("; "));
          drawChart(got.body, zone, planList, figure);
          return null;
        }, function (e) {
          if (run.id !== current.run) return null;
          return refused("the service could not be reached: " + e.message);
        });
    })).then(function (failures) { return failures.filter(function (f) { return f !== null; }); });
  }

  function chartsStatus(failures, drawn) {
    if (!failures.length) return "Done.";
    return (drawn ? "Not every chart could be drawn" : "No chart could be drawn") + ": " +
      failures.join(" | ");
  }

  function submit(event) {
    event.preventDefault();
    ask();
  }

  // Send the form's workload (or the pasted JSON) and draw the answer.
  function ask() {
    if (current.abort) current.abort.abort();
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    var run = { id: ++current.run, signal: controller ? controller.signal : undefined };
    current.abort = controller;
    reset();
    // A service that needs a key lists its signals once a key is typed (this question still uses
    // the default: the list is filled in for the next). A list not had yet is asked for again.
    if (!keyRequired() || $("api-key").value.trim()) loadSignals();
    var pasted = $("workload-json").value.trim();
    var request, body;
    if (pasted) {
      body = pasted; // sent as it is: the service says what is wrong with it
      try { request = JSON.parse(pasted); } catch (e) { request = null; }
    } else {
      request = workloadFromForm();
      body = JSON.stringify(request);
    }
    busy(true, "Asking the service\u2026");
    call("POST", "/api/v1/optimize", body, run.signal).then(function (answer) {
      if (run.id !== current.run) return null;
      if (!answer.ok) {
        showError(describeError(answer));
        busy(false, "", true);
        return null;
      }
      showAnswer(answer.body);
      busy(true, "Fetching forecasts\u2026");
      return drawZones(request, answer.body, run).then(function (failures) {
        if (run.id !== current.run) return;
        var drawn = $("charts").querySelectorAll("figure.zone canvas").length > 0;
        busy(false, chartsStatus(failures, drawn), failures.length > 0);
      });
    }).catch(function (e) {
      if (run.id !== current.run) return;
      showError(["The service could not be reached: " + e.message]);
      busy(false, "", true);
    });
  }

  window.addEventListener("resize", function () {
    charts.forEach(function (c) {
      var width = Math.max(280, c.figure.clientWidth - 4);
      c.plot.setSize({ width: width, height: Math.round(Math.min(320, Math.max(220, width * 0.45))) });
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    $("workload-form").addEventListener("submit", submit);
    if (keyRequired()) {
      // Asking without the key would only be refused (and spend the budget): wait for it.
      busy(false, "This service needs an API key: enter yours in the API key field and press " +
        "\u201cFind the cleanest window\u201d.");
    } else {
      ask();
    }
  });
})();
