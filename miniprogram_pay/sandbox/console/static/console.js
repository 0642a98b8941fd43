// The sandbox console: the shopper's Mini Program (client/pay.js with the console's wx), Adyen's
// controls (the sandbox's control API), the merchant's refunds (through the host's admin API, sent by
// the sandbox) and the live timeline (polled, redrawn when it changes).
(function () {
  'use strict';

  const { h, json, every, clock, diagram } = window.Pages;
  // canRetry: the client module's "try again" (an order paid by several attempts), when it has one.
  const { pay, messageFor, canRetry } = window.MiniProgramPay;
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
    reference: '', // the order's
    attempt: '', // the attempt's own reference, as POST /payments answered it
    pspReference: null,
    refundScenario: body.defaultRefundScenario,
    refundable: null, // what the host says is left to refund
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
    Object.assign(current, { amount: null, version: null, stopPolling: null, refundable: null });
    $('reference').value = current.reference;
    $('refund-amount').value = '';
    for (const button of document.querySelectorAll('.scenario')) {
      button.setAttribute('aria-pressed', String(button.dataset.scenario === body.defaultScenario));
    }
    showCheckout();
    $('entries').replaceChildren();
    $('live').textContent = '';
    $('psp-target').textContent = 'No payment yet: a scenario chosen now applies to the order\'s reference.';
    showHost(null, null);
    diagram($('payment-diagram'), {});
    setControls(null);
    showOrder();
    startPolling(); // faults and choices show before the payment exists
  }

  /** The checkout screen, ready to pay (the order's first attempt, or its next one). */
  function showCheckout() {
    current.settled = false;
    current.attempt = '';
    for (const button of document.querySelectorAll('.scenario')) button.disabled = false;
    $('checkout').classList.remove('hidden');
    $('result').classList.add('hidden');
    $('sheet').classList.add('hidden');
    $('pay').disabled = false;
    $('step').textContent = 'Ready';
  }

  /** The shopper pays the same order again: the client module's retry, a new attempt at the host. */
  function payAgain() {
    showCheckout();
    return startPayment();
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
    // An order paid in several attempts: `reference` is the attempt's, `orderReference` the order's.
    if (url.endsWith('/payments') && res.statusCode === 200 && data.reference) {
      current.reference = data.orderReference || data.reference;
      current.attempt = data.reference;
      current.pspReference = data.pspReference || null;
      current.amount = data.amount || null;
      const attempt = data.attempt ? `, attempt ${data.attempt}` : '';
      $('psp-target').textContent = `Payment ${data.reference}${attempt}, pspReference ${data.pspReference}`;
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

  function showResult(state, message, errMsg, result) {
    $('checkout').classList.add('hidden');
    $('result').classList.remove('hidden');
    $('result').dataset.state = state;
    $('result-icon').textContent = ICONS[state] || '…';
    $('result-message').textContent = message;
    $('result-state').textContent = state;
    $('result-errmsg').textContent = errMsg || '';
    $('result-attempt').textContent = result && result.attempt ? `attempt ${result.attempt} (${result.reference})` : '';
    $('pay-again').classList.toggle('hidden', !(result && canRetry && canRetry(result)));
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
      showResult(result.state, messageFor(result), result.clientErrMsg, result);
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
    // Before POST /payments answers, the order's reference (its next attempts run it too); after,
    // the attempt's, as the host named it.
    const reference = current.attempt || $('reference').value.trim();
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

  function chooseRefundScenario(button) {
    current.refundScenario = button.dataset.refundScenario;
    for (const other of document.querySelectorAll('.refund-scenario')) other.setAttribute('aria-pressed', String(other === button));
  }

  /** The amount field, or null: everything left. */
  function refundAmount() {
    const value = $('refund-amount').value.trim();
    return value ? { currency: (current.amount || orderAmount()).currency, value: Number(value) } : null;
  }

  function adminHeaders() {
    const key = $('admin-key').value;
    return Object.assign({}, CONSOLE, key ? { 'X-Merchant-Admin-Key': key } : {});
  }

  /** The merchant's back office refunds: the sandbox sends it to the host's admin refund endpoint. */
  async function refundThroughHost() {
    const scenario = current.refundScenario;
    const payload = {
      run: current.run,
      api: $('api').value.trim().replace(/\/$/, ''),
      reference: current.reference,
      scenario,
      amount: refundAmount(),
      reason: $('refund-reason').value || null,
      idempotencyKey: `console-${randomHex(8)}`,
    };
    const answer = await json(`${base}/_sandbox/console/refund`, { method: 'POST', body: payload, headers: adminHeaders() });
    current.version = null;
    const res = answer.body || {};
    if (answer.status >= 400) return say(res.error || `answered ${answer.status}`, 'bad');
    if (res.errMsg !== 'request:ok') return say(`the host did not answer: ${res.errMsg}`, 'bad');
    const data = res.data || {};
    if (res.statusCode !== 201) {
      const error = data.error || {};
      return say(`the host refused the refund (${res.statusCode} ${error.code}): ${error.message}`, 'bad');
    }
    const left = money(data.refunds.refundable);
    say(`the host asked Adyen for refund ${data.refund.reference} (${money(data.refund.amount)}, ${scenario}); refundable ${left}`, 'ok');
  }

  /** A refund made by hand at Adyen: the host hears of it by webhook only. */
  function refundAtAdyen() {
    const scenario = current.refundScenario;
    const left = current.refundable ? current.refundable.value : null;
    const amount = refundAmount() || (left ? { currency: current.refundable.currency, value: left } : null);
    const done = `refund of ${amount ? money(amount) : 'the whole payment'} made at Adyen (${scenario})`;
    return control(`/_sandbox/payments/${current.pspReference}/refunds`, { amount, scenario }, done);
  }

  function setControls(sandboxPayment) {
    const known = Boolean(sandboxPayment);
    $('release').disabled = !(known && sandboxPayment.heldWebhooks > 0);
    const paid = known && Boolean(sandboxPayment.paymentStatus);
    $('refund-host').disabled = !paid;
    $('refund-adyen').disabled = !paid;
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
    const attempts = (host && host.attempts) || [];
    $('host-attempts').replaceChildren(
      ...(attempts.length
        ? attempts.map((a) => h('span', { class: 'item', data: { state: a.state } }, `${a.number} ${a.reference} ${a.state}${a.kept ? ' (kept)' : ''}`))
        : [host ? '1' : '-']),
    );
    const ledger = host && host.refunds;
    const items = (ledger && ledger.items) || [];
    $('host-refunds').replaceChildren(
      ...(items.length
        ? items.map((r) => h('span', { class: 'item', data: { state: r.state } }, `${r.reference || r.pspReference}: ${money(r.amount)} ${r.state}`))
        : [host ? 'none' : '-']),
    );
    current.refundable = ledger ? ledger.refundable : null;
    $('host-refundable').textContent = ledger ? money(ledger.refundable) : '-';
    $('refund-amount').placeholder = ledger ? `everything left (${money(ledger.refundable)})` : 'everything left';
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
    const answer = await json(`${base}/_sandbox/console/timeline?${query}`, { headers: adminHeaders() });
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
  $('pay-again').addEventListener('click', payAgain);
  for (const id of ['reference', 'amount', 'currency']) $(id).addEventListener('input', showOrder);
  for (const button of document.querySelectorAll('#sheet button')) {
    button.addEventListener('click', () => current.chooseOutcome && current.chooseOutcome(button.dataset.outcome));
  }
  for (const button of document.querySelectorAll('.scenario')) button.addEventListener('click', () => chooseScenario(button));
  for (const button of document.querySelectorAll('.fault')) button.addEventListener('click', () => injectFault(button));
  for (const button of document.querySelectorAll('.refund-scenario')) button.addEventListener('click', () => chooseRefundScenario(button));
  $('refund-host').addEventListener('click', refundThroughHost);
  $('refund-adyen').addEventListener('click', refundAtAdyen);
  $('release').addEventListener('click', release);
  newOrder();
})();
