// The bootstrap server's admin dashboard (plain browser JS, no build step). It talks only to the admin API of
// src/schema/bootstrap.ts (AdminGroup, /api/v1/admin/*) with `Authorization: Bearer <token>`; the token lives in
// sessionStorage. Whether a token is valid is decided by the server alone: any 401 returns to the login form (B25).
// Server-provided text is written with textContent only, never as HTML.
"use strict"
;(() => {
  const API = "/api/v1/admin"
  const TOKEN_KEY = "effect-p2pnet.adminToken"
  const POLL_MS = 1500
  const HISTORY_LIMIT = 50

  /** @param {string} id */
  const el = (id) => /** @type {HTMLElement} */ (document.querySelector(`[data-testid="${id}"]`))

  class AuthError extends Error {}
  class ApiError extends Error {}

  // ---------------------------------------------------------------------------------------------------------------
  // API
  // ---------------------------------------------------------------------------------------------------------------

  /**
   * One admin request. Resolves with the decoded JSON body; rejects with AuthError on 401 and ApiError (whose message
   * names the problem, from the Schema-derived error body) on any other failure.
   * @param {"GET" | "POST"} method
   * @param {string} path
   * @param {unknown} [body]
   */
  const api = async (method, path, body) => {
    const token = sessionStorage.getItem(TOKEN_KEY)
    if (token === null || token === "") throw new AuthError("Log in with the admin token.")
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" }
    /** @type {RequestInit} */
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" }
    if (body !== undefined) {
      headers["Content-Type"] = "application/json"
      init.body = JSON.stringify(body)
    }
    let response
    try {
      response = await fetch(API + path, init)
    } catch (e) {
      throw new ApiError(`server unreachable (${e instanceof Error ? e.message : String(e)})`)
    }
    const text = await response.text()
    let json
    try {
      json = text === "" ? undefined : JSON.parse(text)
    } catch {
      json = undefined
    }
    if (response.status === 401) {
      const detail = json !== null && typeof json === "object" ? String(json.detail ?? json.message ?? "") : ""
      throw new AuthError(`The server refused the token (401 Unauthorized${detail === "" ? "" : `: ${detail}`}).`)
    }
    if (!response.ok) throw new ApiError(describeError(response.status, json, text))
    return json
  }

  /** @param {number} status @param {any} json @param {string} text */
  const describeError = (status, json, text) => {
    if (json !== null && typeof json === "object") {
      const tag = typeof json._tag === "string" ? json._tag : "error"
      const detail =
        typeof json.detail === "string" ? json.detail : typeof json.message === "string" ? json.message : ""
      return `${status} ${tag}${detail === "" ? "" : `: ${detail}`}`
    }
    return `${status}${text === "" ? "" : `: ${text.slice(0, 200)}`}`
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Formatting (all results go through textContent)
  // ---------------------------------------------------------------------------------------------------------------

  /** @param {number} ms */
  const formatTime = (ms) => {
    const d = new Date(ms)
    return Number.isFinite(d.getTime()) ? d.toISOString().replace("T", " ").slice(0, 19) + " UTC" : String(ms)
  }

  /** @param {number} seconds */
  const formatDuration = (seconds) => {
    const total = Math.max(0, Math.floor(seconds))
    const d = Math.floor(total / 86400)
    const h = Math.floor((total % 86400) / 3600)
    const m = Math.floor((total % 3600) / 60)
    const s = total % 60
    if (d > 0) return `${d}d ${h}h ${m}m`
    if (h > 0) return `${h}h ${m}m ${s}s`
    if (m > 0) return `${m}m ${s}s`
    return `${s}s`
  }

  /** @param {number} ms */
  const formatAgo = (ms) => {
    const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000))
    return seconds < 1 ? "just now" : `${formatDuration(seconds)} ago`
  }

  /** @param {string} taskJson */
  const describeTask = (taskJson) => {
    try {
      const t = JSON.parse(taskJson)
      const data = t && typeof t.taskData === "object" && t.taskData !== null ? t.taskData : {}
      const entries = Object.keys(data)
        .sort()
        .map((k) => `${k}=${String(data[k])}`)
      return `${String(t.taskType)}${entries.length === 0 ? "" : ` (${entries.join(", ")})`}`
    } catch {
      return taskJson.slice(0, 120)
    }
  }

  /** @param {string} tag @param {string} text @param {string} [className] */
  const cell = (tag, text, className) => {
    const c = document.createElement(tag)
    c.textContent = text
    if (className !== undefined) c.className = className
    return c
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Views
  // ---------------------------------------------------------------------------------------------------------------

  /** @param {string} text @param {"" | "error" | "ok"} [kind] */
  const setActionMessage = (text, kind = "") => {
    const m = el("action-message")
    m.textContent = text
    m.className = `message ${kind}`
  }

  /** @param {string} text @param {boolean} [ok] */
  const setLive = (text, ok = true) => {
    const live = el("live-state")
    live.textContent = text
    live.className = ok ? "live ok" : "live error"
  }

  /** @param {string} message */
  const showLogin = (message) => {
    el("dashboard-view").hidden = true
    el("logout").hidden = true
    el("login-view").hidden = false
    el("login-message").textContent = message
    el("header-network").textContent = ""
    setLive("", true)
    el("login-token").focus()
  }

  const showDashboard = () => {
    el("login-view").hidden = true
    el("login-message").textContent = ""
    el("dashboard-view").hidden = false
    el("logout").hidden = false
  }

  /**
   * The server reports request totals since it started; the rates are the change over the readings of the last
   * RATE_WINDOW_MS (timed by this page's clock: the server's uptime is whole seconds).
   */
  const RATE_WINDOW_MS = 15_000
  let readings = /** @type {Array<{ at: number, requests: any }>} */ ([])

  /** @param {any} status */
  const renderStatus = (status) => {
    el("status-mode").textContent = String(status.mode)
    el("status-network").textContent = String(status.network)
    el("header-network").textContent = String(status.network)
    el("status-fingerprint").textContent =
      typeof status.fingerprint === "string" ? status.fingerprint : "none (trustless mode has no key)"
    el("status-uptime").textContent = formatDuration(status.uptimeSeconds)
    el("status-peer-count").textContent = String(status.peers)
    const r = status.requests
    const now = performance.now()
    const last = readings[readings.length - 1]
    // totals that went down mean the server restarted: start the window again
    if (last !== undefined && (r.register < last.requests.register || r.heartbeat < last.requests.heartbeat))
      readings = []
    readings = [...readings.filter((x) => now - x.at <= RATE_WINDOW_MS), { at: now, requests: r }]
    const oldest = readings[0]
    const elapsed = (now - oldest.at) / 1000
    /** @param {"register" | "heartbeat"} key */
    const rate = (key) =>
      elapsed >= 1
        ? `${((r[key] - oldest.requests[key]) / elapsed).toFixed(2)}/s over ${Math.round(elapsed)}s (${r[key]} total)`
        : `${r[key]} total`
    el("status-register-rate").textContent = rate("register")
    el("status-heartbeat-rate").textContent = rate("heartbeat")
    el("status-rejected").textContent = `${r.rejected} / ${r.rateLimited}`
  }

  /** Rows are kept by peer id and updated in place, so a poll never replaces a button the admin is about to click. */
  const peerRows = /** @type {Map<string, HTMLTableRowElement>} */ (new Map())

  /** @param {any} peer */
  const makePeerRow = (peer) => {
    const row = document.createElement("tr")
    row.dataset.testid = "peer-row"
    row.dataset.peerId = peer.id
    row.append(
      cell("td", peer.id, "mono id"),
      cell("td", "", "mono"),
      cell("td", ""),
      cell("td", "", "time"),
      cell("td", "")
    )
    const actions = document.createElement("td")
    actions.className = "actions"
    for (const [action, label] of /** @type {const} */ ([
      ["disconnect", "Disconnect"],
      ["block", "Block"]
    ])) {
      const button = document.createElement("button")
      button.type = "button"
      button.textContent = label
      button.dataset.testid = `peer-${action}`
      button.setAttribute("aria-label", `${label} peer ${peer.id}`)
      if (action === "block") button.className = "danger"
      button.addEventListener("click", () => void peerAction(row, peer.id, action))
      actions.append(button)
    }
    row.append(actions)
    return row
  }

  /** @param {ReadonlyArray<any>} peers */
  const renderPeers = (peers) => {
    const body = el("peers-body")
    const sorted = [...peers].sort((a, b) => a.registeredAt - b.registeredAt || (a.id < b.id ? -1 : 1))
    const seen = new Set()
    let cursor = body.firstElementChild
    for (const peer of sorted) {
      seen.add(peer.id)
      let row = peerRows.get(peer.id)
      if (row === undefined) {
        row = makePeerRow(peer)
        peerRows.set(peer.id, row)
      }
      const cells = row.cells
      cells[1].textContent = String(peer.address)
      cells[2].textContent = String(peer.port)
      cells[3].textContent = formatTime(peer.registeredAt)
      cells[4].textContent = formatAgo(peer.lastSeenAt)
      cells[4].title = formatTime(peer.lastSeenAt)
      // keep the rows in order with the fewest moves: a row already in place stays where it is
      if (row === cursor) cursor = cursor.nextElementSibling
      else body.insertBefore(row, cursor)
    }
    for (const [id, row] of peerRows) {
      if (!seen.has(id)) {
        row.remove()
        peerRows.delete(id)
      }
    }
    el("peers-count").textContent = `(${peers.length})`
    el("peers-empty").hidden = peers.length > 0
  }

  /**
   * Replaces a table body's rows when its data changed (the audit log and the signing history are append-only
   * lists, newest first).
   * @template T
   * @param {string} name @param {ReadonlyArray<T>} items @param {(item: T) => HTMLTableRowElement} makeRow
   */
  const renderList = (name, items, makeRow) => {
    const body = el(`${name}-body`)
    const key = JSON.stringify(items)
    if (body.dataset.key === key) return
    body.dataset.key = key
    body.replaceChildren(...items.map(makeRow))
    el(`${name}-empty`).hidden = items.length > 0
  }

  /** @param {any} entry */
  const auditRow = (entry) => {
    const row = document.createElement("tr")
    row.dataset.testid = "audit-row"
    row.append(
      cell("td", formatTime(entry.at), "time"),
      cell("td", entry.action, "time"),
      cell("td", entry.detail, "mono")
    )
    return row
  }

  /** @param {any} entry */
  const signingRow = (entry) => {
    const row = document.createElement("tr")
    row.dataset.testid = "signing-row"
    const hash = cell("td", `${entry.hash.slice(0, 16)}…`, "mono time")
    hash.title = entry.hash
    row.append(
      cell("td", formatTime(entry.signedAt), "time"),
      cell("td", describeTask(entry.taskJson)),
      hash,
      cell("td", entry.keyFingerprint, "mono")
    )
    return row
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Behaviour
  // ---------------------------------------------------------------------------------------------------------------

  const refresh = async () => {
    const [status, peers, audit, signatures] = await Promise.all([
      api("GET", "/status"),
      api("GET", "/peers"),
      api("GET", `/audit?limit=${HISTORY_LIMIT}`),
      api("GET", `/signatures?limit=${HISTORY_LIMIT}`)
    ])
    renderStatus(status)
    renderPeers(peers)
    renderList("audit", audit, auditRow)
    renderList("signing", signatures, signingRow)
  }

  /** Bumped on every login and logout: a poll loop or a request of an earlier session stops quietly. */
  let session = 0

  /** @param {number} ms */
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

  /** @param {number} mine */
  const pollLoop = async (mine) => {
    while (mine === session) {
      try {
        await refresh()
        if (mine !== session) return
        setLive(`live, updated ${new Date().toLocaleTimeString()}`)
      } catch (e) {
        if (mine !== session) return
        if (e instanceof AuthError) return logout(e.message)
        setLive(`connection problem: ${e instanceof Error ? e.message : String(e)}; retrying`, false)
      }
      await sleep(POLL_MS)
    }
  }

  /**
   * @param {HTMLTableRowElement} row
   * @param {string} id
   * @param {"disconnect" | "block"} action
   */
  const peerAction = async (row, id, action) => {
    const mine = session
    const buttons = row.querySelectorAll("button")
    buttons.forEach((b) => (b.disabled = true))
    setActionMessage(`${action === "block" ? "Blocking" : "Disconnecting"} peer ${id}…`)
    try {
      const result = await api("POST", `/peers/${encodeURIComponent(id)}/${action}`, {
        reason: "from the dashboard"
      })
      if (mine !== session) return
      const verb = action === "block" ? "Block" : "Disconnect"
      setActionMessage(
        `${verb} of peer ${id} queued for ${result.enqueued} registered peer(s) (task ${result.task.task.id}).`,
        "ok"
      )
      await refresh().catch(() => undefined)
    } catch (e) {
      if (mine !== session) return
      if (e instanceof AuthError) return logout(e.message)
      setActionMessage(`Could not ${action} peer ${id}: ${e instanceof Error ? e.message : String(e)}`, "error")
    } finally {
      buttons.forEach((b) => (b.disabled = false))
    }
  }

  const reset = () => {
    readings = []
    peerRows.clear()
    el("peers-body").replaceChildren()
    for (const name of ["audit", "signing"]) {
      const body = el(`${name}-body`)
      body.replaceChildren()
      delete body.dataset.key
    }
    setActionMessage("")
  }

  /** @param {string} message */
  const logout = (message) => {
    session += 1
    sessionStorage.removeItem(TOKEN_KEY)
    reset()
    showLogin(message)
  }

  /** The first authenticated request is the login check: the server answers 401 to a wrong token. */
  const start = async () => {
    const mine = ++session
    el("login-message").textContent = "Checking the token with the server…"
    try {
      await refresh()
    } catch (e) {
      if (mine !== session) return
      if (e instanceof AuthError) return logout(e.message)
      // Valid or not, we cannot tell while the server fails: show the problem, keep the token, let the poll retry.
      setLive(`connection problem: ${e instanceof Error ? e.message : String(e)}; retrying`, false)
    }
    if (mine !== session) return
    showDashboard()
    void pollLoop(mine)
  }

  el("login-form").addEventListener("submit", (event) => {
    event.preventDefault()
    const input = /** @type {HTMLInputElement} */ (el("login-token"))
    const token = input.value.trim()
    input.value = ""
    if (token === "") return
    sessionStorage.setItem(TOKEN_KEY, token)
    void start()
  })

  el("logout").addEventListener("click", () => logout("Logged out."))

  if (sessionStorage.getItem(TOKEN_KEY)) void start()
  else showLogin("")
})()
