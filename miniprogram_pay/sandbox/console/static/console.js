// The sandbox console: the shopper's Mini Program (client/pay.js with the console's wx), Adyen's
// controls (the sandbox's control API) and the live timeline (polled, redrawn when it changes).
(function () {
  'use strict';

  const { h, json, every, clock, diagram } = window.Pages;
  const { pay, messageFor } = window.MiniProgramPay;
  const { createWx, randomHex } = window.ConsoleWx;
  const $ = (id) => document.getElementById(id);
  const body = document.body.dataset;
  const base = body.base || '';
  const CONSOLE = { 'X-Sandbox-Console': '1' };
  const POLL_MS = 400;
  // The shopper's screen gives up waiting for a final state after this; the timeline goes on.
  const CLIENT_POLL = { attempts: 8, intervalMs: 500 };
  const ICONS = { Authorised: '✓', Refused: '✕', Error: '!' };

  const current = {
    run: '',
    reference: '',
    pspReference: null,
    amount: null, // the host's amount once /payments answered
    settled: false,
    version: null,
    stopPolling: null,
    chooseOutcome: null,
  };

  // -- the order and the shopper's screen ----------------------------------------------------

  /** "CNY 11.30" from minor units, with the currency's own number of decimals (JPY has none). */
  function money(amount) {
    let digits = 2;
    try {
      digits = new Intl.NumberFormat('en', { style: 'currency', currency: amount.currency }).resolvedOptions().maximumFractionDigits;
    } catch (_) {
      // not an ISO currency: two decimals
    }
    return `${amount.currency} ${(amount.value / 10 ** digits).toFixed(digits)}`;
  }

  function orderAmount() {
    return { currency: $('currency').value.trim().toUpperCase(), value: Number($('amount').value) };
  }

  function showOrder() {
    if (!current.pspReference) current.reference = $('reference').value.trim();
    $('order-reference').textContent = $('reference').value;
    $('order-total').textContent = money(orderAmount());
    $('pay').textContent = `Pay ${money(orderAmount())}`;
  }

  function newOrder() {
    if (current.stopPolling) current.stopPolling();
    Object.assign(current, { run: randomHex(8), reference: `console-${randomHex(3)}`, pspReference: null });
    Object.assign(current, { amount: null, settled: false, version: null, stopPolling: null });
    $('reference').value = current.reference;
    $('refund-amount').value = '';
    for (const button of document.querySelectorAll('.scenario')) {
      button.disabled = false;
      button.setAttribute('aria-pressed', String(button.dataset.scenario === body.defaultScenario));
    }
    $('checkout').classList.remove('hidden');
    $('result').classList.add('hidden');
    $('sheet').classList.add('hidden');
    $('pay').disabled = false;
    $('step').textContent = 'Ready';
    $('entries').replaceChildren();
    $('live').textContent = '';
    $('psp-target').textContent = 'No payment yet: a scenario chosen now applies to the order\'s reference.';
    showHost(null, null);
    diagram($('payment-diagram'), {});
    setControls(null);
    showOrder();
    startPolling(); // faults and choices show before the payment exists
  }

  function orderBody() {
    const order = { reference: $('reference').value.trim(), amount: orderAmount() };
    const extra = $('extra').value.trim();
    return extra ? Object.assign(order, JSON.parse(extra)) : order;
  }

  const STEPS = {
    login: 'wx.login, then POST /session',
    payment: 'POST /payments',
    requestPayment: 'wx.requestPayment: the pay sheet',
    details: 'POST /payments/details, then the state',
  };

  function onAnswer(url, res) {
    // The host's answer to POST /payments names the payment (a resolver may choose its reference).
    const data = res.data || {};
    if (url.endsWith('/payments') && res.statusCode === 200 && data.reference) {
      current.reference = data.reference;
      current.pspReference = data.pspReference || null;
      current.amount = data.amount || null;
      $('psp-target').textContent = `Payment ${data.reference}, pspReference ${data.pspReference}`;
    }
  }

  function chooseInSheet(params) {
    $('sheet-amount').textContent = current.amount ? money(current.amount) : money(orderAmount());
    $('sheet-reference').textContent = current.reference;
    $('sheet').classList.remove('hidden');
    return new Promise((resolve) => {
      current.chooseOutcome = (outcome) => {
        current.chooseOutcome = null;
        current.settled = true;
        $('sheet').classList.add('hidden');
        for (const button of document.querySelectorAll('.scenario')) button.disabled = true;
        resolve(outcome);
      };
    });
  }

  function showResult(state, message, errMsg) {
    $('checkout').classList.add('hidden');
    $('result').classList.remove('hidden');
    $('result').dataset.state = state;
    $('result-icon').textContent = ICONS[state] || '…';
    $('result-message').textContent = message;
    $('result-state').textContent = state;
    $('result-errmsg').textContent = errMsg || '';
  }

  async function startPayment() {
    let order;
    try {
      order = orderBody();
    } catch (error) {
      $('step').textContent = `More order fields: ${error.message}`;
      return;
    }
    current.reference = order.reference || current.reference;
    $('pay').disabled = true;
    const wx = createWx({
      base,
      run: current.run,
      appId: body.appId,
      shopper: () => $('shopper').value.trim() || 'alice',
      onAnswer,
      choose: chooseInSheet,
    });
    try {
      const result = await pay({
        wx,
        apiBase: $('api').value.trim().replace(/\/$/, ''),
        order,
        poll: CLIENT_POLL,
        onStep: (step) => ($('step').textContent = STEPS[step] || step),
      });
      showResult(result.state, messageFor(result), result.clientErrMsg);
    } catch (error) {
      showResult('Error', error.message, error.code);
    }
  }

  // -- Adyen's controls ------------------------------------------------------------------------

  function say(text, tone = 'info') {
    $('psp-message').textContent = text;
    $('psp-message').className = `muted small tone-${tone}`;
  }

  async function control(path, payload, done) {
    const answer = await json(base + path, { method: 'POST', body: payload || {}, headers: CONSOLE });
    if (answer.status >= 400) say((answer.body && answer.body.error) || `answered ${answer.status}`, 'bad');
    else say(done, 'ok');
    current.version = null; // redraw at the next poll
    return answer;
  }

  async function chooseScenario(button) {
    // Before POST /payments answers, the order's reference; after, the host's.
    const reference = current.pspReference ? current.reference : $('reference').value.trim();
    const scenario = button.dataset.scenario;
    const answer = await control('/_sandbox/scenarios', { reference, scenario }, `scenario ${scenario} for ${reference}`);
    if (answer.status < 400) {
      for (const other of document.querySelectorAll('.scenario')) other.setAttribute('aria-pressed', String(other === button));
    }
  }

  function injectFault(button) {
    const kind = button.dataset.fault;
    return control('/_sandbox/faults', { kind, target: 'any', count: 1 }, `the next call to Adyen: ${kind}`);
  }

  function release() {
    return control(`/_sandbox/payments/${current.pspReference}/release`, {}, 'held webhooks on their way');
  }

  function refund(button) {
    const scenario = button.dataset.refundScenario;
    const value = Number($('refund-amount').value);
    const amount = { currency: (current.amount || orderAmount()).currency, value };
    return control(
      `/_sandbox/payments/${current.pspReference}/refunds`,
      { amount, scenario },
      `refund of ${money(amount)} made at Adyen (${scenario})`,
    );
  }

  function setControls(sandboxPayment) {
    const known = Boolean(sandboxPayment);
    $('release').disabled = !(known && sandboxPayment.heldWebhooks > 0);
    for (const button of document.querySelectorAll('.refund')) button.disabled = !(known && sandboxPayment.paymentStatus);
    if (known && !$('refund-amount').value) $('refund-amount').value = String(sandboxPayment.refundableValue);
  }

  // -- the timeline ----------------------------------------------------------------------------

  function showHost(host, error) {
    $('host-state').textContent = host ? host.state : '-';
    $('host-state').dataset.state = host ? host.state : '';
    $('host-result').textContent = host ? host.resultCode || '-' : '-';
    $('host-psp').textContent = host ? host.pspReference || '-' : '-';
    $('host-amount').textContent = host ? money(host.amount) : '-';
    const conflicts = host ? host.conflicts.map((c) => c.kind) : [];
    $('host-conflicts').textContent = conflicts.length ? conflicts.join(', ') : host ? 'none' : '-';
    $('host-conflicts').classList.toggle('tone-bad', conflicts.length > 0);
    $('host-error').textContent = error || '';
  }

  function showFaults(faults) {
    $('faults').textContent = faults.length
      ? `Waiting: ${faults.map((f) => `${f.kind} on the next ${f.count} call(s) to ${f.target}`).join('; ')}`
      : 'No fault waiting.';
  }

  function entry(item) {
    return h(
      'li',
      { class: `entry tone-${item.tone}`, data: { lane: item.lane } },
      h('span', { class: 'when mono' }, clock(item.at)),
      h('span', { class: 'lane' }, item.lane),
      h('span', { class: 'what' }, item.title, item.detail ? h('span', { class: 'detail' }, item.detail) : null),
    );
  }

  async function refresh() {
    const query = new URLSearchParams({ run: current.run, reference: current.reference, api: $('api').value.trim() });
    if (current.pspReference) query.set('pspReference', current.pspReference);
    const key = $('admin-key').value;
    const headers = Object.assign({}, CONSOLE, key ? { 'X-Merchant-Admin-Key': key } : {});
    const answer = await json(`${base}/_sandbox/console/timeline?${query}`, { headers });
    if (answer.status !== 200) {
      $('live').textContent = (answer.body && answer.body.error) || `timeline answered ${answer.status}`;
      return;
    }
    const view = answer.body;
    $('live').textContent = `live · ${clock(new Date().toISOString())}`;
    if (view.version === current.version) return;
    current.version = view.version;
    if (view.pspReference) current.pspReference = view.pspReference;
    $('entries').replaceChildren(...view.entries.map(entry));
    diagram($('payment-diagram'), { current: view.state, visited: view.visited, taken: view.taken });
    showHost(view.host, view.hostError);
    showFaults(view.faults);
    setControls(view.sandbox);
  }

  function startPolling() {
    if (current.stopPolling) current.stopPolling();
    current.stopPolling = every(POLL_MS, refresh);
  }

  // -- wiring ----------------------------------------------------------------------------------

  $('pay').addEventListener('click', startPayment);
  $('new-order').addEventListener('click', newOrder);
  for (const id of ['reference', 'amount', 'currency']) $(id).addEventListener('input', showOrder);
  for (const button of document.querySelectorAll('#sheet button')) {
    button.addEventListener('click', () => current.chooseOutcome && current.chooseOutcome(button.dataset.outcome));
  }
  for (const button of document.querySelectorAll('.scenario')) button.addEventListener('click', () => chooseScenario(button));
  for (const button of document.querySelectorAll('.fault')) button.addEventListener('click', () => injectFault(button));
  for (const button of document.querySelectorAll('.refund')) button.addEventListener('click', () => refund(button));
  $('release').addEventListener('click', release);
  newOrder();
})();
