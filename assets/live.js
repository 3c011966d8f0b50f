// swarmfeed dashboard: follows the log on pages with a live feed, and keeps times,
// countdowns and "last event" current on every page.
//
// The server renders every row (escaped); this file only moves rows around. Rows
// arrive in #feed-incoming from one of three transports, tried in order:
//   1. /ws/html through htmx's ws extension (out-of-band swaps),
//   2. /api/stream?format=html through htmx's sse extension, when a WebSocket
//      cannot be opened (refused, a proxy that does not pass upgrades, or a
//      constructor that throws: a CSP, a proxy's injected script, an extension),
//   3. /api/events/poll?format=html (long-poll), when an event stream cannot either.
// Each (re)connection resumes after `position`, the last seq shown, and rows at or
// below it are dropped, so a reconnect shows exactly what was missed, once.
(function () {
  "use strict";

  var MAX_ROWS = 300; // rows kept in a feed; older ones leave the page, not the log
  var MAX_BUFFER = 1000; // rows held while paused; beyond it, resume reloads
  var FAILURES_BEFORE_FALLBACK = 2; // failed first connections before the next transport
  var SWARM_REFRESH_MS = 700; // trailing throttle of the stat/list refresh
  var POLL_WAIT_SECS = 25;

  function localTime(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  // Server-rendered times are UTC; show the viewer's own.
  function localize(root) {
    var times = root.querySelectorAll ? root.querySelectorAll("time[data-ts]") : [];
    for (var i = 0; i < times.length; i++) {
      var ms = Number(times[i].dataset.ts);
      times[i].textContent = localTime(ms);
      times[i].title = new Date(ms).toLocaleString();
    }
  }

  function age(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    return Math.floor(s / 3600) + " h";
  }

  // Auction countdowns, from the server's clock at render time (data-now), so a
  // browser whose clock is off still counts right.
  function tickCountdowns() {
    var sections = document.querySelectorAll("[data-now]");
    for (var i = 0; i < sections.length; i++) {
      var sec = sections[i];
      if (sec.dataset.seenAt === undefined) sec.dataset.seenAt = String(Date.now());
      var serverNow = Number(sec.dataset.now) + (Date.now() - Number(sec.dataset.seenAt));
      var clocks = sec.querySelectorAll("[data-closes]");
      for (var j = 0; j < clocks.length; j++) {
        var left = Number(clocks[j].dataset.closes) - serverNow;
        clocks[j].textContent = left > 0 ? Math.ceil(left / 1000) + " s" : "closing…";
      }
    }
  }

  function Live(feed) {
    this.feed = feed;
    this.incoming = document.getElementById("feed-incoming");
    this.links = document.getElementById("live-links");
    this.conn = document.getElementById("conn");
    this.lastEvent = document.getElementById("last-event");
    this.pauseButton = document.getElementById("pause");
    this.position = Number(feed.dataset.since) || 0;
    this.query = feed.dataset.query || "";
    this.newestFirst = feed.dataset.order !== "oldest-first";
    this.paused = false;
    this.autoPaused = false;
    this.buffer = [];
    this.overflowed = false;
    this.transport = null;
    this.link = null; // the element holding the current connection
    this.opened = false; // the current transport has connected at least once
    this.failures = 0;
    this.pollGeneration = 0;
    this.swarmTimer = null;
    this.lastEventMs = null;
    var rows = feed.querySelectorAll("time[data-ts]");
    for (var i = 0; i < rows.length; i++) {
      this.lastEventMs = Math.max(this.lastEventMs || 0, Number(rows[i].dataset.ts));
    }
  }

  Live.prototype.url = function (path, positionParam) {
    return path + (path.indexOf("?") >= 0 ? "&" : "?") + positionParam + "=" + this.position + (this.query ? "&" + this.query : "");
  };

  Live.prototype.setState = function (state) {
    var names = { ws: "WebSocket", sse: "SSE", poll: "polling" };
    this.conn.dataset.state = state;
    this.conn.dataset.transport = this.transport || "";
    this.conn.textContent =
      state === "live" ? "Live · " + names[this.transport] : state === "reconnecting" ? "Reconnecting…" : "Connecting…";
  };

  Live.prototype.drop = function () {
    if (this.link) this.link.remove();
    this.link = null;
    this.pollGeneration++;
  };

  Live.prototype.start = function (transport) {
    this.drop();
    this.transport = transport;
    this.opened = false;
    this.failures = 0;
    this.setState("connecting");
    if (transport === "poll") return this.poll(this.pollGeneration);
    var el = document.createElement("div");
    if (transport === "ws") {
      el.setAttribute("hx-ext", "ws");
      el.setAttribute("ws-connect", this.url("/ws/html", "since"));
    } else {
      el.setAttribute("hx-ext", "sse");
      el.setAttribute("sse-connect", this.url("/api/stream?format=html", "since"));
      var sink = document.createElement("div");
      sink.setAttribute("sse-swap", "message");
      sink.setAttribute("hx-target", "#feed-incoming");
      sink.setAttribute("hx-swap", "beforeend");
      el.appendChild(sink);
    }
    this.link = el;
    this.links.appendChild(el);
    htmx.process(el);
  };

  // A connection attempt failed. Before the transport ever connected, that means it
  // is not available here: after a few tries, fall back to the next one. After it
  // has connected, it is the server going away (a restart): keep retrying it.
  Live.prototype.failed = function (next) {
    this.setState("reconnecting");
    if (this.opened) return;
    this.failures++;
    if (this.failures >= FAILURES_BEFORE_FALLBACK && next) {
      console.info("swarmfeed: " + this.transport + " unavailable, falling back to " + next);
      this.start(next);
    }
  };

  // The WebSocket or EventSource constructor threw. It would throw again on every
  // retry, so go to the next transport at once, after the extension that called it
  // has finished, and hand that extension a closed stand-in that never fires.
  // `closedState` is the constructor's CLOSED (3 for WebSocket, 2 for EventSource),
  // written out because whatever made it throw may have replaced the constructor.
  Live.prototype.unopenable = function (next, error, closedState) {
    console.warn("swarmfeed: " + this.transport + " cannot be opened here (" + error + "), falling back to " + next);
    var self = this;
    var transport = this.transport;
    setTimeout(function () {
      if (self.transport === transport) self.start(next);
    }, 0);
    var closed = new EventTarget();
    closed.readyState = closedState;
    closed.OPEN = 1;
    closed.CLOSED = closedState;
    closed.close = function () {};
    closed.send = function () {};
    return closed;
  };

  Live.prototype.connected = function () {
    this.opened = true;
    this.failures = 0;
    this.setState("live");
  };

  // The session ended (logout elsewhere, revoked, expired): back to the login form,
  // which returns here afterwards.
  Live.prototype.loggedOut = function () {
    if (this.loggingOut) return; // the logout form's own answer is on its way
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  };

  Live.prototype.poll = function (generation) {
    var self = this;
    var wait = 0; // the first answer comes at once, so the indicator turns live
    var backoff = 500;
    function again(delay) {
      setTimeout(function () {
        if (generation === self.pollGeneration) step();
      }, delay);
    }
    function step() {
      fetch(self.url("/api/events/poll?format=html&wait=" + wait, "after"), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      })
        .then(function (r) {
          if (r.status === 401) {
            self.loggedOut();
            throw new Error("logged out");
          }
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (body) {
          if (generation !== self.pollGeneration) return;
          self.connected();
          if (body.reset) return location.reload();
          if (body.html) {
            self.incoming.insertAdjacentHTML("beforeend", body.html);
            self.drain();
          }
          if (typeof body.next === "number") self.position = Math.max(self.position, body.next);
          wait = POLL_WAIT_SECS;
          backoff = 500;
          again(0);
        })
        .catch(function () {
          if (generation !== self.pollGeneration) return;
          self.setState("reconnecting");
          backoff = Math.min(backoff * 2, 5000);
          again(backoff);
        });
    }
    step();
  };

  // Moves what a transport brought from #feed-incoming into the feed (or the pause
  // buffer), in seq order, dropping anything already shown.
  Live.prototype.drain = function () {
    var fresh = [];
    var node;
    while ((node = this.incoming.firstElementChild)) {
      node.remove();
      var seq = Number(node.dataset.seq);
      if (!(seq > this.position)) continue;
      this.position = seq;
      localize(node);
      node.classList.add("ev--new");
      fresh.push(node);
    }
    if (!fresh.length) return;
    var newest = fresh[fresh.length - 1].querySelector("time[data-ts]");
    if (newest) this.lastEventMs = Number(newest.dataset.ts);
    if (this.paused) {
      for (var i = 0; i < fresh.length; i++) this.buffer.push(fresh[i]);
      if (this.buffer.length > MAX_BUFFER) {
        this.buffer.splice(0, this.buffer.length - MAX_BUFFER);
        this.overflowed = true;
      }
      this.renderPause();
    } else {
      this.show(fresh);
    }
    for (var j = 0; j < fresh.length; j++) {
      if (fresh[j].hasAttribute("data-swarm")) {
        this.refreshSwarmSoon();
        break;
      }
    }
    // An alert fired or cleared: the banner (on /swarm/live) fetches itself again.
    for (var k = 0; k < fresh.length; k++) {
      if ((fresh[k].dataset.type || "").indexOf("alert.") === 0) {
        htmx.trigger(document.body, "sf:alert");
        break;
      }
    }
    this.tick();
  };

  Live.prototype.show = function (nodes) {
    for (var i = 0; i < nodes.length; i++) {
      if (this.newestFirst) this.feed.prepend(nodes[i]);
      else this.feed.append(nodes[i]);
    }
    while (this.feed.children.length > MAX_ROWS) {
      (this.newestFirst ? this.feed.lastElementChild : this.feed.firstElementChild).remove();
    }
  };

  Live.prototype.renderPause = function () {
    var b = this.pauseButton;
    b.setAttribute("aria-pressed", this.paused ? "true" : "false");
    if (!this.paused) b.textContent = "Pause";
    else b.textContent = "Resume (" + this.buffer.length + (this.overflowed ? "+" : "") + " new)";
  };

  Live.prototype.pause = function (auto) {
    if (this.paused) return;
    this.paused = true;
    this.autoPaused = auto;
    this.renderPause();
  };

  Live.prototype.resume = function () {
    if (this.overflowed) return location.reload();
    this.paused = false;
    this.autoPaused = false;
    var held = this.buffer;
    this.buffer = [];
    this.show(held);
    this.renderPause();
  };

  // Stats and lists follow the same stream: a swarm event asks htmx to re-fetch the
  // panels, at most once per SWARM_REFRESH_MS and always after the latest event.
  Live.prototype.refreshSwarmSoon = function () {
    if (this.swarmTimer) return;
    var self = this;
    this.swarmTimer = setTimeout(function () {
      self.swarmTimer = null;
      htmx.trigger(document.body, "sf:swarm");
    }, SWARM_REFRESH_MS);
  };

  Live.prototype.tick = function () {
    this.lastEvent.textContent = this.lastEventMs ? "last event " + age(Date.now() - this.lastEventMs) + " ago" : "no events yet";
  };

  Live.prototype.notice = function () {
    var n = document.getElementById("feed-notice");
    if (!n) return;
    if (n.dataset.state === "reset") location.reload();
    else if (n.dataset.state === "error") console.warn("swarmfeed: " + n.dataset.code + ": " + n.textContent);
  };

  Live.prototype.install = function () {
    var self = this;
    var body = document.body;
    function mine(evt) {
      return self.link && (evt.target === self.link || self.link.contains(evt.target));
    }
    // Every (re)connect resumes after what is on the page. The extensions keep the
    // URL they were given; these hooks put the current position in it.
    htmx.createWebSocket = function (url) {
      var u = new URL(url, location.href);
      u.searchParams.set("since", String(self.position));
      try {
        return new WebSocket(u.toString());
      } catch (e) {
        return self.unopenable("sse", e, 3);
      }
    };
    htmx.createEventSource = function (url) {
      var u = new URL(url, location.href);
      u.searchParams.set("since", String(self.position));
      var source;
      try {
        source = new EventSource(u.toString(), { withCredentials: true });
      } catch (e) {
        return self.unopenable("poll", e, 2);
      }
      source.addEventListener("reset", function () {
        location.reload();
      });
      return source;
    };
    // Quick retries after a restart (the default backoff grows to a minute).
    htmx.config.wsReconnectDelay = function (retries) {
      return Math.min(500 * Math.pow(2, retries), 5000) * (0.5 + Math.random() / 2);
    };
    body.addEventListener("htmx:wsOpen", function (e) {
      if (mine(e)) self.connected();
    });
    body.addEventListener("htmx:wsError", function (e) {
      if (mine(e)) self.failed("sse");
    });
    body.addEventListener("htmx:wsClose", function (e) {
      if (!mine(e)) return;
      self.setState("reconnecting");
      // The extension retries only after abnormal closes and restarts; anything else
      // (a proxy's normal close) is retried here.
      var code = e.detail && e.detail.event ? e.detail.event.code : 1006;
      // 1008 from the server: this session's token was revoked or the session ended.
      if (code === 1008) return self.loggedOut();
      if ([1006, 1011, 1012, 1013].indexOf(code) < 0 && self.opened) {
        setTimeout(function () {
          if (self.transport === "ws") self.start("ws");
        }, 1000);
      }
    });
    body.addEventListener("htmx:wsAfterMessage", function (e) {
      if (!mine(e)) return;
      self.drain();
      self.notice();
    });
    body.addEventListener("htmx:sseOpen", function (e) {
      if (mine(e)) self.connected();
    });
    body.addEventListener("htmx:sseError", function (e) {
      if (mine(e)) self.failed("poll");
    });
    body.addEventListener("htmx:sseMessage", function (e) {
      if (mine(e)) self.drain();
    });
    document.addEventListener("submit", function (e) {
      if (e.target.matches && e.target.matches("form.logout")) self.loggingOut = true;
    });
    this.pauseButton.addEventListener("click", function () {
      if (self.paused) self.resume();
      else self.pause(false);
    });
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) self.pause(true);
      else if (self.autoPaused) self.resume();
    });
    setInterval(function () {
      self.tick();
    }, 1000);
    this.tick();
    // `?transport=sse` or `=poll` starts further down the list (for trying them).
    var first = new URLSearchParams(location.search).get("transport");
    this.start(first === "sse" || first === "poll" ? first : "ws");
  };

  // The scrubber of a past view (/swarm/live?at=…): the output follows the thumb, and
  // letting it go shows that moment (the form's own button does the same without script).
  function installScrubber() {
    var form = document.getElementById("scrubber");
    if (!form) return;
    var range = form.querySelector("input[type=range]");
    var out = form.querySelector("output");
    var head = range.max;
    range.addEventListener("input", function () {
      out.textContent = range.value + " / " + head;
      range.setAttribute("aria-valuetext", "seq " + range.value);
    });
    range.addEventListener("change", function () {
      form.requestSubmit ? form.requestSubmit() : form.submit();
    });
  }

  function boot() {
    installScrubber();
    localize(document);
    tickCountdowns();
    setInterval(tickCountdowns, 1000);
    if (window.htmx) {
      htmx.onLoad(function (el) {
        localize(el);
        tickCountdowns();
      });
    }
    var feed = document.querySelector("#feed[data-live]");
    if (feed && window.htmx) {
      var live = new Live(feed);
      live.install();
      window.swarmfeedLive = live; // for the browser tests and the curious
    }
  }

  // After htmx's own start (it too waits for DOMContentLoaded, and loads first), so
  // its settings from the page's meta tag are in place.
  if (document.readyState === "complete") boot();
  else document.addEventListener("DOMContentLoaded", boot);
})();
