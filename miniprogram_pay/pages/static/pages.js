// Small helpers shared by the package's pages: plain JavaScript, no build step, no dependency.
// Everything is on window.Pages; pages load this file before their own script.
(function () {
  'use strict';

  /** An element: h('li', { class: 'entry', data: { lane: 'host' } }, 'text', child, ...). */
  function h(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'class') element.className = value;
      else if (name === 'data') Object.assign(element.dataset, value);
      else if (name === 'on') for (const [event, listener] of Object.entries(value)) element.addEventListener(event, listener);
      else element.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }

  /** fetch() with JSON both ways; resolves { status, body } for any HTTP answer, rejects on network errors. */
  async function json(url, { method = 'GET', body, headers = {} } = {}) {
    const options = { method, headers: Object.assign({ accept: 'application/json' }, headers) };
    if (body !== undefined) {
      options.headers['content-type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    const text = await response.text();
    let parsed = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch (_) {
      // not JSON: hand the text over as it is
    }
    return { status: response.status, body: parsed };
  }

  /** Run `task` now and then every `intervalMs` after each run ends (never two at once); returns stop(). */
  function every(intervalMs, task) {
    let stopped = false;
    let timer = null;
    async function run() {
      if (stopped) return;
      try {
        await task();
      } catch (error) {
        console.warn('poll failed:', error); // eslint-disable-line no-console
      }
      if (!stopped) timer = setTimeout(run, intervalMs);
    }
    run();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  /** "12:03:04.512" from an ISO timestamp (local time), or '' when there is none. */
  function clock(iso) {
    if (!iso) return '';
    const moment = new Date(iso);
    if (Number.isNaN(moment.getTime())) return iso;
    const pad = (n, width = 2) => String(n).padStart(width, '0');
    return `${pad(moment.getHours())}:${pad(moment.getMinutes())}:${pad(moment.getSeconds())}.${pad(moment.getMilliseconds(), 3)}`;
  }

  /** Mark a state diagram (diagram.html): the current state, the states visited, the moves taken. */
  function diagram(svg, { current = null, visited = [], taken = [] } = {}) {
    for (const state of svg.querySelectorAll('.state')) {
      const name = state.dataset.state;
      state.classList.toggle('current', name === current);
      state.classList.toggle('visited', visited.includes(name));
    }
    const moves = new Set(taken.map(([from, to]) => `${from}>${to}`));
    for (const edge of svg.querySelectorAll('.edge')) {
      edge.classList.toggle('taken', moves.has(`${edge.dataset.from}>${edge.dataset.to}`));
    }
  }

  window.Pages = { h, json, every, clock, diagram };
})();
