// The fleetshift web console: reads the coordinator's JSON API (the wire contract's messages
// in the proto3 JSON mapping) and follows rollouts over server-sent events, resuming on
// another replica's console when its own stops answering. Read-only; every text is put in
// the page as text, never as markup.
'use strict';

// ---- small helpers -------------------------------------------------------------------------

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else if (name === 'style') node.style.cssText = value; // CSSOM: allowed by the page's policy
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJson(path) {
  const response = await fetch(path, { credentials: 'include', cache: 'no-store' });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error || `${path} answered ${response.status}`);
  }
  return body;
}

function enumName(value, prefix) {
  if (!value) return 'unspecified';
  return String(value).replace(prefix, '').toLowerCase().replaceAll('_', ' ');
}

const shardState = (value) => enumName(value || 'SHARD_STATE_PENDING', 'SHARD_STATE_');
const planState = (value) => enumName(value, 'PLAN_STATE_');

function millis(timestamp) {
  return timestamp ? Date.parse(timestamp) : NaN;
}

function when(timestamp) {
  const at = millis(timestamp);
  return Number.isNaN(at) ? '–' : new Date(at).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function span(milliseconds) {
  if (!Number.isFinite(milliseconds) || milliseconds < 0) return '–';
  if (milliseconds < 1000) return `${Math.round(milliseconds)} ms`;
  const seconds = milliseconds / 1000;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

// Versions compare as numbers when both are digits (timestamps, sequence numbers), else as text.
function compareVersions(left, right) {
  left = left || '';
  right = right || '';
  if (/^\d+$/.test(left) && /^\d+$/.test(right)) {
    const a = left.replace(/^0+/, '');
    const b = right.replace(/^0+/, '');
    if (a.length !== b.length) return a.length - b.length;
  }
  return left < right ? -1 : left > right ? 1 : 0;
}

function section(title, ...children) {
  return el('section', {}, el('h2', { text: title }), ...children);
}

function table(headings, rows) {
  return el('table', {},
    el('thead', {}, el('tr', {}, headings.map((heading) => el('th', { text: heading })))),
    el('tbody', {}, rows.map((cells) => el('tr', {}, cells.map((cell) =>
      el('td', {}, cell === undefined || cell === null || cell === '' ? '–' : cell))))));
}

function showError(error) {
  const main = document.getElementById('main');
  main.replaceChildren(el('p', { class: 'error', text: error.message || String(error) }));
}

// ---- the live stream -----------------------------------------------------------------------

// Follows one plan's events (or the fleet's) on this replica's console, and on another's when
// this one fails, resuming after the last sequence seen. A stream that ends while `finished`
// does not hold (a replica stopping ends its streams too) is followed elsewhere.
class Live {
  constructor(plan, onEvent, finished) {
    this.plan = plan;
    this.onEvent = onEvent;
    this.finished = finished || (() => false);
    this.since = null;
    this.consoles = [location.origin];
    this.index = 0;
    this.failures = 0;
    this.source = null;
    this.indicator = document.getElementById('link');
  }

  async start() {
    await this.refreshConsoles(location.origin);
    this.connect();
  }

  async refreshConsoles(base) {
    try {
      const listed = await getJson(`${base}/api/v1/consoles`);
      const urls = listed.consoles.map((entry) => entry.url.replace(/\/$/, ''));
      const others = urls.filter((url) => url !== location.origin);
      this.consoles = [location.origin, ...others];
    } catch (_) {
      // Keep the consoles known so far.
    }
  }

  show(state, base) {
    this.indicator.dataset.state = state;
    this.indicator.dataset.console = base || '';
    const labels = { live: 'live', reconnecting: 'reconnecting…', ended: 'ended' };
    this.indicator.textContent = labels[state] || state;
    this.indicator.title = base ? `live updates from ${base}` : 'live updates';
  }

  connect() {
    const base = this.consoles[this.index % this.consoles.length];
    const query = new URLSearchParams();
    if (this.plan) query.set('plan', this.plan);
    if (this.since) query.set('since', this.since);
    const source = new EventSource(`${base}/api/v1/events?${query}`, {
      withCredentials: base !== location.origin,
    });
    this.source = source;
    source.onopen = () => {
      this.failures = 0;
      this.show('live', base);
    };
    source.onmessage = (message) => {
      if (message.lastEventId) this.since = message.lastEventId;
      this.onEvent(JSON.parse(message.data));
    };
    source.addEventListener('end', () => {
      source.close();
      if (this.finished()) this.show('ended', base);
      else this.retry(base);
    });
    source.onerror = () => {
      source.close();
      this.retry(base);
    };
  }

  // The next console, after a pause that grows while none answers.
  retry(base) {
    this.failures += 1;
    this.show('reconnecting', base);
    this.index += 1;
    const pause = Math.min(5000, 250 * 2 ** Math.min(this.failures, 5));
    setTimeout(async () => {
      const next = this.consoles[this.index % this.consoles.length];
      await this.refreshConsoles(next);
      this.connect();
    }, pause);
  }
}

// Calls `render` at most once per frame, however many events arrive.
function framed(render) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      render();
    });
  };
}

// ---- the fleet -----------------------------------------------------------------------------

function shardGroup(shard, by) {
  if (by === 'agent') return shard.agent_id;
  if (by === 'host') return (shard.host && shard.host.hostname) || shard.agent_id;
  if (by === 'engine') return enumName(shard.engine, 'ENGINE_');
  return (shard.labels && shard.labels[by]) || '(none)';
}

// current / behind / drifted / unfinished / unreachable, against the newest version announced
// and the schema most shards at the same version have.
function shardStanding(shards) {
  let newest = '';
  const fingerprints = new Map();
  for (const shard of shards) {
    if (compareVersions(shard.current_version, newest) > 0) newest = shard.current_version;
    const key = shard.current_version || '';
    const counts = fingerprints.get(key) || new Map();
    const fingerprint = shard.schema_fingerprint || '';
    counts.set(fingerprint, (counts.get(fingerprint) || 0) + 1);
    fingerprints.set(key, counts);
  }
  const majority = new Map();
  for (const [version, counts] of fingerprints) {
    let best = '';
    let most = -1;
    for (const [fingerprint, count] of counts) {
      if (count > most) { best = fingerprint; most = count; }
    }
    majority.set(version, best);
  }
  const standing = new Map();
  for (const shard of shards) {
    let state = 'current';
    if (shard.health === 'SHARD_HEALTH_UNREACHABLE') state = 'unreachable';
    else if (shard.health === 'SHARD_HEALTH_UNFINISHED_REVISION') state = 'unfinished';
    else if (shard.schema_fingerprint
      && majority.get(shard.current_version || '') !== shard.schema_fingerprint) state = 'drifted';
    else if (compareVersions(shard.current_version, newest) < 0) state = 'behind';
    standing.set(shard.shard_id, state);
  }
  return { standing, newest, majority };
}

async function fleetPage(main) {
  const parameters = new URLSearchParams(location.search);
  const selector = parameters.get('selector') || '';
  const query = new URLSearchParams();
  for (const pair of selector.split(',').map((text) => text.trim()).filter(Boolean)) {
    const [key, ...value] = pair.split('=');
    query.set(key.trim(), value.join('=').trim());
  }
  const listed = await getJson(`/api/v1/shards?${query}`);
  const shards = listed.shards || [];
  const { standing, newest } = shardStanding(shards);
  const activity = new Map();

  const labelKeys = new Set(['agent', 'host', 'engine']);
  for (const shard of shards) for (const key of Object.keys(shard.labels || {})) labelKeys.add(key);
  const by = parameters.get('by') || (labelKeys.has('region') ? 'region' : 'host');
  const controls = el('form', { class: 'controls', method: 'get', action: '/' },
    el('label', {}, 'group by ',
      el('select', { name: 'by' }, [...labelKeys].sort().map((key) =>
        el('option', { value: key, selected: key === by }, key)))),
    el('label', {}, ' selector ',
      el('input', { name: 'selector', value: selector, placeholder: 'region=eu,env=prod', size: 28 })),
    el('button', { type: 'submit' }, 'show'));

  const counts = {};
  for (const state of standing.values()) counts[state] = (counts[state] || 0) + 1;
  const legend = el('p', { class: 'legend' },
    ['current', 'behind', 'drifted', 'unfinished', 'unreachable'].map((state) =>
      el('span', { class: `chip ${state}` }, `${state} ${counts[state] || 0}`)),
    el('span', { class: 'muted' }, ` ${shards.length} shards · newest version ${newest || '–'}`));

  const groups = new Map();
  for (const shard of shards) {
    const group = shardGroup(shard, by);
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(shard);
  }
  const cells = new Map();
  const grid = el('div', { class: 'groups' }, [...groups.keys()].sort().map((group) =>
    el('div', { class: 'group' },
      el('h3', {}, `${by} ${group} `, el('span', { class: 'muted', text: `(${groups.get(group).length})` })),
      el('div', { class: 'grid' }, groups.get(group).map((shard) => {
        const cell = el('a', {
          class: `cell ${standing.get(shard.shard_id)}`,
          href: `/shards/${encodeURIComponent(shard.shard_id)}`,
          'data-shard': shard.shard_id,
          'data-standing': standing.get(shard.shard_id),
        });
        cell.title = `${shard.shard_id}\nversion ${shard.current_version || 'base'} (${standing.get(shard.shard_id)})\nagent ${shard.agent_id} ${shard.agent_version || ''}`;
        cells.set(shard.shard_id, { cell, shard });
        return cell;
      })))));
  main.replaceChildren(el('h1', { text: 'Fleet' }), controls, legend, grid);

  // Last activity, live: each shard's latest rollout event.
  const live = new Live(null, (event) => {
    const changed = event.shard_state || event.progress;
    const shardId = changed && changed.shard_id;
    const entry = shardId && cells.get(shardId);
    if (!entry) return;
    const state = event.shard_state ? shardState(event.shard_state.state) : 'progress';
    activity.set(shardId, `${when(event.at)} ${event.plan_id}: ${state}`);
    entry.cell.dataset.activity = state;
    entry.cell.title = `${entry.shard.shard_id}\nversion ${entry.shard.current_version || 'base'} (${standing.get(shardId)})\nagent ${entry.shard.agent_id}\nlast: ${activity.get(shardId)}`;
  });
  await live.start();
}

// ---- plans ---------------------------------------------------------------------------------

function planTasks(plan) {
  return (plan.waves || []).flatMap((wave) => (wave.shards || []).map((task) => ({ ...task, wave: wave.index || 0 })));
}

// The plans, newest first; states and shards done follow the fleet's events.
async function plansPage(main) {
  let rows = new Map();
  const render = async () => {
    const listed = await getJson('/api/v1/plans');
    rows = new Map();
    const body = (listed.plans || []).map((plan) => {
      const tasks = new Map(planTasks(plan).map((task) => [task.shard_id, task.state]));
      const risk = plan.risk ? enumName(plan.risk.level, 'RISK_LEVEL_') : '–';
      const needed = plan.risk && plan.risk.approvals_required ? plan.risk.approvals_required : 0;
      const badge = el('span', { class: `badge ${planState(plan.state).replaceAll(' ', '-')}`, text: planState(plan.state) });
      const done = el('span', { class: 'done' });
      const row = { badge, done, tasks };
      rows.set(plan.plan_id, row);
      showDone(row);
      return [
        el('a', { href: `/plans/${encodeURIComponent(plan.plan_id)}`, text: plan.plan_id }),
        badge,
        plan.author,
        `${(plan.approvals || []).length}${needed ? ` / ${needed}` : ''}`,
        el('span', { class: `risk ${risk}`, text: risk }),
        done,
        plan.target_version,
        when(plan.created_at),
      ];
    });
    main.replaceChildren(el('h1', { text: 'Plans' }),
      table(['plan', 'state', 'author', 'approvals', 'risk', 'shards done', 'target', 'created'], body));
  };
  const showDone = (row) => {
    const done = [...row.tasks.values()].filter((state) => state === 'SHARD_STATE_SUCCEEDED').length;
    row.done.textContent = `${done} / ${row.tasks.size}`;
  };
  await render();
  let reading = null;
  const live = new Live(null, (event) => {
    const row = rows.get(event.plan_id);
    if (!row) {
      // A plan made since the list was read: read it again, once for a burst of them.
      reading = reading || render().finally(() => { reading = null; });
      return;
    }
    if (event.plan_state) {
      row.badge.textContent = planState(event.plan_state.state);
      row.badge.className = `badge ${planState(event.plan_state.state).replaceAll(' ', '-')}`;
    }
    if (event.shard_state) {
      row.tasks.set(event.shard_state.shard_id, event.shard_state.state);
      showDone(row);
    }
  });
  await live.start();
}

const STATE_ORDER = ['pending', 'claimed', 'running', 'throttled', 'waiting for window', 'succeeded', 'failed', 'rolled back', 'cancelled'];

class PlanView {
  constructor(main, answer) {
    this.main = main;
    this.plan = answer.plan;
    // What pending shards wait for (their start, their window), as read with the plan.
    this.waiting = answer.waiting || {};
    this.tasks = new Map(planTasks(this.plan).map((task) => [task.shard_id, task]));
    this.cells = new Map();
    this.bars = new Map();
    this.current = new Map();
    for (const task of this.tasks.values()) {
      if (task.throttled) this.current.set(task.shard_id, { throttled: `${task.throttled.signal}: ${task.throttled.detail}` });
    }
    this.dirty = new Set();
    this.render = framed(() => this.refresh());
  }

  // The state a shard shows: its task's, refined by what it is waiting on.
  shownState(task) {
    const state = shardState(task.state);
    if (state === 'running' || state === 'claimed') {
      const now = this.current.get(task.shard_id);
      if (now && now.throttled) return 'throttled';
    }
    if (state === 'pending' && /^waiting for window/.test(this.waiting[task.shard_id] || '')) return 'waiting for window';
    return state;
  }

  build() {
    const plan = this.plan;
    this.stateBadge = el('span', { class: 'badge', id: 'plan-state' });
    this.reason = el('p', { class: 'reason', id: 'plan-reason' });
    this.summary = el('p', { class: 'legend', id: 'summary' });
    this.failures = el('div', { id: 'failures' });
    this.timeline = el('div', { class: 'timeline', id: 'timeline' });
    this.span = el('p', { class: 'muted', id: 'timeline-span' });
    const waves = el('div', { id: 'waves' }, (plan.waves || []).map((wave) =>
      el('div', { class: 'wave' },
        el('h3', { text: `wave ${wave.index || 0} · ${(wave.shards || []).length} shards` }),
        el('div', { class: 'grid' }, (wave.shards || []).map((task) => {
          const cell = el('a', {
            class: 'cell',
            href: `/shards/${encodeURIComponent(task.shard_id)}`,
            'data-shard': task.shard_id,
          });
          this.cells.set(task.shard_id, cell);
          return cell;
        })))));
    const bars = [...this.tasks.values()].map((task) => {
      const bar = el('div', { class: 'bar', 'data-shard': task.shard_id });
      const row = el('div', { class: 'row' }, el('span', { class: 'label', text: task.shard_id }), el('div', { class: 'track' }, bar));
      this.bars.set(task.shard_id, bar);
      return row;
    });
    this.timeline.replaceChildren(...bars);
    const needed = plan.risk && plan.risk.approvals_required ? ` of ${plan.risk.approvals_required} required` : '';
    const parts = [
      el('h1', {}, `Plan ${plan.plan_id} `, this.stateBadge),
      el('p', { class: 'muted' },
        `${enumName(plan.direction || 'DIRECTION_UP', 'DIRECTION_')} to ${plan.target_version || 'base'} · by ${plan.author || '–'} · created ${when(plan.created_at)} · `,
        `${(plan.approvals || []).length} approval(s)${needed}`),
      this.reason,
      this.phaseSection = this.phases(),
      this.summary,
      section('Shards by wave', waves),
      section('Failures by reason', this.failures),
      section('Timeline', this.span, this.timeline),
      this.risk(),
      this.lint(),
      this.rehearsals(),
    ];
    this.main.replaceChildren(...parts.filter(Boolean));
    for (const shardId of this.tasks.keys()) this.dirty.add(shardId);
    this.refresh();
  }

  // Where each phase stands, as `fleetshift status` says it.
  phases() {
    const phases = this.plan.phases || [];
    if (!phases.length) return null;
    const current = this.plan.current_phase || 0;
    const tasks = [...this.tasks.values()];
    const done = tasks.filter((task) => task.state === 'SHARD_STATE_SUCCEEDED').length;
    const standing = (phase, index) => {
      if (index < current || (index === current && done === tasks.length)) return 'done';
      if (index === current) return `running: ${done} of ${tasks.length} shards done`;
      const gate = phase.gate;
      if (!gate) return 'waits for the phase before it';
      if (gate.none) return 'no gate: starts when the phase before it has finished everywhere';
      if (gate.opened) return `gate opened by ${gate.opened_by || '–'} (${gate.reason || ''}); starts when the phase before it has finished everywhere`;
      if (!gate.waiting_for) {
        const quiet = gate.quiet_application
          ? `, or no session of ${gate.quiet_application} on any shard for ${parseFloat(gate.quiet_for || '0')}s` : '';
        return `gate waits for an approver (fleetshift gate open)${quiet}`;
      }
      return `gate waits for ${gate.waiting_for}${gate.quiet_since ? ` (quiet since ${when(gate.quiet_since)})` : ''}`;
    };
    const list = el('ol', { class: 'phases', id: 'phases' }, phases.map((phase, index) =>
      el('li', { class: index < current ? 'done' : index === current ? 'current' : 'later', 'data-phase': phase.name },
        el('strong', { text: phase.name }), ` (to ${phase.last_version || '–'}): ${standing(phase, index)}`,
        phase.started_at ? ` · started ${when(phase.started_at)}` : '')));
    this.phaseList = list;
    return section('Phases', list);
  }

  // Phases and approvals change with the plan's state: read again when it changes.
  async reread() {
    try {
      const { plan } = await getJson(`/api/v1/plans/${encodeURIComponent(this.plan.plan_id)}`);
      this.plan.phases = plan.phases;
      this.plan.current_phase = plan.current_phase;
      this.plan.approvals = plan.approvals;
      const fresh = this.phases();
      if (fresh && this.phaseSection) this.phaseSection.replaceWith(fresh);
      this.phaseSection = fresh;
    } catch (_) {
      // The next change reads it again.
    }
  }

  risk() {
    const risk = this.plan.risk;
    if (!risk) return null;
    return section('Risk',
      el('p', {}, el('span', { class: `risk ${enumName(risk.level, 'RISK_LEVEL_')}`, text: enumName(risk.level, 'RISK_LEVEL_') }),
        ` score ${risk.score || 0}`, risk.revision ? ` · riskiest revision ${risk.revision}` : '',
        risk.shard_id ? ` on ${risk.shard_id}` : ''),
      table(['factor', 'points', 'why'], (risk.factors || []).map((factor) => [factor.name, factor.points || 0, factor.explanation])));
  }

  lint() {
    const findings = this.plan.findings || [];
    return section('Lint findings', findings.length
      ? table(['severity', 'rule', 'where', 'message', 'hint', 'allowed'], findings.map((finding) => [
        finding.severity, finding.rule, `${finding.file || finding.revision || ''}${finding.line ? `:${finding.line}` : ''}`,
        finding.message, finding.hint, finding.allowed]))
      : el('p', { class: 'muted', text: 'none' }));
  }

  rehearsals() {
    const rehearsals = this.plan.rehearsals || [];
    return section('Rehearsals', rehearsals.length
      ? table(['shard', 'result', 'at version', 'rehearsed', 'findings', 'failure'], rehearsals.map((summary) => [
        summary.shard_id, summary.passed ? 'passed' : 'failed', summary.shard_version, when(summary.rehearsed_at),
        (summary.findings || []).length, summary.failure || summary.degradation]))
      : el('p', { class: 'muted', text: 'none' }));
  }

  apply(event) {
    if (event.plan_state) {
      this.plan.state = event.plan_state.state;
      this.plan.state_reason = event.plan_state.reason || '';
      for (const shardId of this.tasks.keys()) this.dirty.add(shardId);
      if ((this.plan.phases || []).length) this.reread();
    }
    if (event.shard_state) {
      const changed = event.shard_state;
      const task = this.tasks.get(changed.shard_id) || { shard_id: changed.shard_id, wave: changed.wave };
      task.state = changed.state;
      task.error = changed.error;
      const at = event.at;
      if ((task.state === 'SHARD_STATE_RUNNING' || task.state === 'SHARD_STATE_CLAIMED') && !task.started_at) task.started_at = at;
      if (['SHARD_STATE_SUCCEEDED', 'SHARD_STATE_FAILED', 'SHARD_STATE_ROLLED_BACK', 'SHARD_STATE_CANCELLED'].includes(task.state)) {
        task.finished_at = at;
        this.current.delete(changed.shard_id);
      }
      if (task.state !== 'SHARD_STATE_PENDING') delete this.waiting[changed.shard_id];
      this.tasks.set(changed.shard_id, task);
      this.dirty.add(changed.shard_id);
    }
    if (event.progress) {
      const progress = event.progress;
      const now = this.current.get(progress.shard_id) || {};
      if (progress.revision_started) { now.revision = progress.revision_started.version; now.statement = ''; }
      if (progress.statement_running) { now.revision = progress.statement_running.version; now.statement = progress.statement_running.text; }
      if (progress.throttled) now.throttled = progress.throttled.resumed ? null : `${progress.throttled.signal}: ${progress.throttled.detail}`;
      this.current.set(progress.shard_id, now);
      this.dirty.add(progress.shard_id);
    }
    this.render();
  }

  refresh() {
    const plan = this.plan;
    this.stateBadge.textContent = planState(plan.state);
    this.stateBadge.className = `badge ${planState(plan.state).replaceAll(' ', '-')}`;
    this.reason.textContent = plan.state_reason || '';
    for (const shardId of this.dirty) {
      const task = this.tasks.get(shardId);
      const cell = this.cells.get(shardId);
      if (!task || !cell) continue;
      const state = this.shownState(task);
      cell.className = `cell ${state.replaceAll(' ', '-')}`;
      cell.dataset.state = state;
      const now = this.current.get(shardId);
      const lines = [`${shardId} · wave ${task.wave} · ${state}`];
      if (now && now.revision) lines.push(`revision ${now.revision}`);
      if (now && now.statement) lines.push(now.statement.slice(0, 200));
      if (now && now.throttled) lines.push(`throttled: ${now.throttled}`);
      if (this.waiting[shardId]) lines.push(this.waiting[shardId]);
      if (task.error && task.error.message) lines.push(task.error.message);
      cell.title = lines.join('\n');
    }
    this.dirty.clear();
    this.summarize();
    this.timelineSoon();
  }

  // The timeline moves every bar when its span grows: drawn at most every quarter second,
  // and once more after the last change.
  timelineSoon() {
    const since = performance.now() - (this.timelineDrawn || 0);
    if (since >= 250) {
      this.timelineDrawn = performance.now();
      this.drawTimeline();
      return;
    }
    if (this.timelineTimer) return;
    this.timelineTimer = setTimeout(() => {
      this.timelineTimer = null;
      this.timelineDrawn = performance.now();
      this.drawTimeline();
    }, 250 - since);
  }

  summarize() {
    const counts = new Map();
    const reasons = new Map();
    for (const task of this.tasks.values()) {
      const state = this.shownState(task);
      counts.set(state, (counts.get(state) || 0) + 1);
      if (task.error && task.error.message && ['failed', 'rolled back'].includes(state)) {
        if (!reasons.has(task.error.message)) reasons.set(task.error.message, []);
        reasons.get(task.error.message).push(task.shard_id);
      }
    }
    this.summary.replaceChildren(...STATE_ORDER.filter((state) => counts.get(state)).map((state) =>
      el('span', { class: `chip ${state.replaceAll(' ', '-')}`, 'data-count': state }, `${state} ${counts.get(state)}`)),
    el('span', { class: 'muted', text: ` ${this.tasks.size} shards` }));
    const groups = [...reasons.entries()].sort((left, right) => right[1].length - left[1].length);
    this.failures.replaceChildren(...(groups.length ? groups.map(([message, shards]) =>
      el('div', { class: 'failure' },
        el('p', {}, el('strong', { text: `${shards.length} shard(s): ` }), el('span', { class: 'message', text: message })),
        el('p', { class: 'shards' }, shards.sort().map((shardId) =>
          el('a', { href: `/shards/${encodeURIComponent(shardId)}`, text: shardId }))))) : [el('p', { class: 'muted', text: 'none' })]));
  }

  drawTimeline() {
    let first = Infinity;
    let last = -Infinity;
    const now = Date.now();
    for (const task of this.tasks.values()) {
      const start = millis(task.started_at);
      if (Number.isNaN(start)) continue;
      const end = Number.isNaN(millis(task.finished_at)) ? now : millis(task.finished_at);
      first = Math.min(first, start);
      last = Math.max(last, end);
    }
    if (!Number.isFinite(first)) {
      this.span.textContent = 'no shard has started';
      return;
    }
    const width = Math.max(last - first, 1);
    this.span.textContent = `${when(new Date(first).toISOString())} → ${span(last - first)}`;
    for (const [shardId, bar] of this.bars) {
      const task = this.tasks.get(shardId);
      const start = millis(task.started_at);
      if (Number.isNaN(start)) { bar.style.width = '0'; continue; }
      const finished = millis(task.finished_at);
      const end = Number.isNaN(finished) ? now : finished;
      bar.style.left = `${((start - first) / width) * 100}%`;
      bar.style.width = `${Math.max(((end - start) / width) * 100, 0.3)}%`;
      bar.className = `bar ${this.shownState(task).replaceAll(' ', '-')}`;
      bar.title = `${shardId}: ${span(end - start)}${Number.isNaN(finished) ? ' so far' : ''}`;
    }
  }
}

async function planPage(main, planId) {
  const answer = await getJson(`/api/v1/plans/${encodeURIComponent(planId)}`);
  const view = new PlanView(main, answer);
  view.build();
  window.fleetshiftPlan = view;
  const ended = ['PLAN_STATE_SUCCEEDED', 'PLAN_STATE_FINISHED_WITH_FAILURES', 'PLAN_STATE_HALTED', 'PLAN_STATE_CANCELLED'];
  const live = new Live(planId, (event) => view.apply(event), () => ended.includes(view.plan.state));
  await live.start();
}

// ---- a shard -------------------------------------------------------------------------------

function baselineChart(task) {
  const measured = task.baselines || [];
  const before = measured.find((entry) => entry.phase === 'BASELINE_PHASE_BEFORE');
  const after = measured.find((entry) => entry.phase === 'BASELINE_PHASE_AFTER');
  if (!before && !after) return null;
  const names = new Set();
  for (const entry of [before, after]) for (const query of (entry && entry.queries) || []) names.add(query.name);
  const p50 = (entry, name) => {
    const query = ((entry && entry.queries) || []).find((candidate) => candidate.name === name);
    return query ? query.p50_ms || 0 : null;
  };
  let most = 0;
  for (const name of names) most = Math.max(most, p50(before, name) || 0, p50(after, name) || 0);
  return el('div', { class: 'chart' }, [...names].sort().map((name) =>
    el('div', { class: 'measure' },
      el('span', { class: 'label', text: name }),
      ['before', 'after'].map((phase) => {
        const value = p50(phase === 'before' ? before : after, name);
        return el('div', { class: `pair ${phase}` },
          el('div', { class: 'fill', style: `width:${value === null || !most ? 0 : (value / most) * 100}%` }),
          el('span', { text: value === null ? `${phase} –` : `${phase} ${value.toFixed(2)} ms p50` }));
      }))));
}

async function shardPage(main, shardId) {
  const [page, fleet] = await Promise.all([
    getJson(`/api/v1/shards/${encodeURIComponent(shardId)}`),
    getJson('/api/v1/shards'),
  ]);
  const shard = page.shard;
  const { standing, majority } = shardStanding(fleet.shards || []);
  let facts;
  if (shard) {
    const expected = majority.get(shard.current_version || '');
    const fingerprintStatus = !shard.schema_fingerprint ? 'not reported'
      : expected === shard.schema_fingerprint ? 'matches most shards at this version' : `differs from most shards at this version (${(expected || '').slice(0, 12)})`;
    facts = table(['', ''], [
      ['standing', el('span', { class: `chip ${standing.get(shard.shard_id)}`, text: standing.get(shard.shard_id) })],
      ['version', shard.current_version || 'base'],
      ['agent', `${shard.agent_id} ${shard.agent_version || ''}`],
      ['host', shard.host ? shard.host.hostname : ''],
      ['engine', enumName(shard.engine, 'ENGINE_')],
      ['lifecycle', `${enumName(shard.lifecycle, 'SHARD_LIFECYCLE_')}${shard.lifecycle_source ? ` (${shard.lifecycle_source})` : ''}`],
      ['labels', Object.entries(shard.labels || {}).map(([key, value]) => `${key}=${value}`).join(', ')],
      ['schema fingerprint', el('span', { 'data-fingerprint': fingerprintStatus }, `${(shard.schema_fingerprint || '').slice(0, 16)} · ${fingerprintStatus}`)],
    ]);
  } else {
    facts = el('p', { class: 'error', text: `${shardId}'s agent is not connected: the shard is not announced` });
  }
  const ledger = page.ledger.error
    ? el('p', { class: 'muted', text: page.ledger.error })
    : table(['version', 'name', 'status', 'took', 'statements', 'fence token', 'agent', 'plan', 'started', 'error'],
      (page.ledger.rows || []).map((row) => [
        row.version, row.name, el('span', { class: `status ${row.status}`, text: row.status }),
        row.duration_ms === undefined ? (row.finished_at ? '0 ms' : '–') : span(Number(row.duration_ms)),
        row.statements_run || 0, row.fence_token, row.agent_id,
        row.plan_id ? el('a', { href: `/plans/${encodeURIComponent(row.plan_id)}`, text: row.plan_id }) : 'outside a plan',
        row.started_at, row.error]));
  const history = table(['plan', 'direction', 'to', 'state', 'started', 'took', 'fence token', 'agent', 'interruptions'],
    page.history.map(({ plan, task }) => [
      el('a', { href: `/plans/${encodeURIComponent(plan.plan_id)}`, text: plan.plan_id }),
      enumName(plan.direction || 'DIRECTION_UP', 'DIRECTION_'),
      task.target_version || plan.target_version,
      shardState(task.state) + (task.error && task.error.message ? `: ${task.error.message}` : ''),
      when(task.started_at),
      span(millis(task.finished_at) - millis(task.started_at)),
      task.fence_token, task.agent_id, task.interruptions || 0,
    ]));
  const backups = page.backups.error
    ? el('p', { class: 'muted', text: page.backups.error })
    : table(['backup', 'taken', 'size', 'sha256', 'location'], (page.backups.backups || []).map((backup) => [
      backup.backup_id, when(backup.taken_at), `${backup.size_bytes || 0} bytes`, (backup.sha256 || '').slice(0, 16), backup.location]));
  const charts = page.history.map(({ plan, task }) => {
    const chart = baselineChart(task);
    return chart && el('div', {}, el('h3', { text: `plan ${plan.plan_id}` }), chart);
  }).filter(Boolean);
  main.replaceChildren(el('h1', { text: `Shard ${shardId}` }), facts,
    section('Ledger', el('div', { id: 'ledger' }, ledger)),
    section('In plans', history),
    section('Backups', backups),
    section('Baselines before and after', charts.length ? charts : el('p', { class: 'muted', text: 'none measured' })));
}

// ---- routing -------------------------------------------------------------------------------

async function route() {
  const main = document.getElementById('main');
  const path = location.pathname;
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  try {
    if (parts.length === 0) await fleetPage(main);
    else if (parts[0] === 'plans' && parts.length === 1) await plansPage(main);
    else if (parts[0] === 'plans' && parts.length === 2) await planPage(main, parts[1]);
    else if (parts[0] === 'shards' && parts.length === 2) await shardPage(main, parts[1]);
    else showError(new Error(`no page at ${path}`));
  } catch (error) {
    showError(error);
  }
  document.body.dataset.loaded = 'true';
  // When the page was ready, for anyone measuring it (the browser's own timeline).
  performance.mark('fleetshift-rendered');
}

route();
