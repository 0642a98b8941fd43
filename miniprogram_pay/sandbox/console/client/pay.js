/**
 * The client side of a WeChat Pay payment through miniprogram-pay (plain CommonJS, no build step).
 *
 *   wx.login -> POST /session -> POST /payments -> wx.requestPayment(redirect.data)
 *   -> POST /payments/details with res.errMsg (on success AND on fail: a cancel is reported too)
 *   -> the payment's state as the SERVER says it, never as the wx.requestPayment callback says it.
 *
 * Usage (in a Page):
 *
 *   const { pay, messageFor } = require('../../lib/pay.js');
 *   const result = await pay({ wx, apiBase: 'https://shop.example/pay', order: { orderId: 'A42' } });
 *   this.setData({ state: result.state, message: messageFor(result) });
 *
 * `order` is sent as the POST /payments body (plus the payment method): with an order resolver on the
 * server it names the order (e.g. orderId); the amount is always decided by the server.
 *
 * Try again: when `canRetry(result)` (the attempt was Refused or failed), call pay() again with the
 * same `order`. The server starts a new attempt of the order (its own reference, `result.attempt`
 * goes up) and never charges the order twice; a payment still being confirmed is handed out again
 * until its WeChat prepay_id expires (about 2 hours), then replaced by a new attempt too.
 */
'use strict';

const PAYMENT_METHOD = { type: 'wechatpayMiniProgram' };
const FINAL_STATES = ['Authorised', 'Refused', 'Error'];
const RETRYABLE_STATES = ['Refused', 'Error'];
const DEFAULT_POLL = { attempts: 20, intervalMs: 500 };

/** An error from our API or the network; `code` is the API's stable error code. */
class PayError extends Error {
  constructor(code, message, statusCode) {
    super(message);
    this.name = 'PayError';
    this.code = code;
    this.statusCode = statusCode;
  }
}

function login(wx) {
  return new Promise((resolve, reject) => {
    wx.login({
      success: (res) => (res.code ? resolve(res.code) : reject(new PayError('login_failed', res.errMsg || 'wx.login gave no code'))),
      fail: (res) => reject(new PayError('login_failed', res.errMsg || 'wx.login failed')),
    });
  });
}

function request(wx, apiBase, { method, path, data, token }) {
  const header = { 'content-type': 'application/json' };
  if (token) header.Authorization = 'Bearer ' + token;
  return new Promise((resolve, reject) => {
    wx.request({
      url: apiBase + path,
      method,
      data,
      header,
      success: (res) => {
        if (res.statusCode >= 200 && res.statusCode < 300) return resolve(res.data);
        const error = (res.data && res.data.error) || {};
        reject(new PayError(error.code || 'http_' + res.statusCode, error.message || 'request failed', res.statusCode));
      },
      fail: (res) => reject(new PayError('network_error', res.errMsg || 'request:fail')),
    });
  });
}

/** Resolves with res.errMsg whatever happened: success and fail are both answers to report. */
function requestPayment(wx, params) {
  return new Promise((resolve) => {
    wx.requestPayment({
      timeStamp: params.timeStamp,
      nonceStr: params.nonceStr,
      package: params.package,
      signType: params.signType,
      paySign: params.paySign,
      success: (res) => resolve(res.errMsg || 'requestPayment:ok'),
      fail: (res) => resolve((res && res.errMsg) || 'requestPayment:fail'),
    });
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Ask the server until this attempt has a final state (a webhook may settle it after details).
 * GET /payments/{reference} answers for the order, with each attempt: read ours from it.
 */
async function waitForFinal(wx, apiBase, token, payment, poll) {
  let current = payment;
  for (let i = 0; i < poll.attempts && !FINAL_STATES.includes(current.state); i += 1) {
    await sleep(poll.intervalMs);
    const order = await request(wx, apiBase, {
      method: 'GET',
      path: '/payments/' + encodeURIComponent(payment.reference),
      token,
    });
    current = (order.attempts || []).find((a) => a.reference === payment.reference) || order;
  }
  return current;
}

function outcome(payment, started, clientErrMsg) {
  return {
    reference: payment.reference,
    orderReference: started.orderReference || payment.reference,
    attempt: started.attempt || 1,
    state: payment.state,
    resultCode: payment.resultCode || null,
    refusalReason: payment.refusalReason || null,
    pspReference: payment.pspReference || null,
    clientErrMsg,
  };
}

/**
 * Pay for `order`. Resolves with the server's view of the attempt: { reference, orderReference,
 * attempt, state, resultCode, refusalReason, pspReference, clientErrMsg }. `reference` is the
 * attempt's own; `state` is one of Created, Pending, Error, Refused, Authorised (an order already
 * paid answers with the attempt that paid it). Rejects with a PayError when our server or the
 * network fails.
 */
async function pay({ wx, apiBase, order, poll = DEFAULT_POLL, onStep = () => {} }) {
  onStep('login');
  const code = await login(wx);
  const session = await request(wx, apiBase, { method: 'POST', path: '/session', data: { code } });
  const token = session.token;
  onStep('payment');
  const body = Object.assign({}, order, { paymentMethod: PAYMENT_METHOD });
  const payment = await request(wx, apiBase, { method: 'POST', path: '/payments', data: body, token });
  const params = payment.redirect && payment.redirect.data;
  if (!params) return outcome(payment, payment, null); // already paid, or nothing left to pay
  onStep('requestPayment');
  const errMsg = await requestPayment(wx, params);
  onStep('details');
  // The attempt's own reference (and its paymentData, when Adyen gave one) names this attempt.
  const data = { reference: payment.reference, details: { paymentStatus: errMsg } };
  if (payment.paymentData) data.paymentData = payment.paymentData;
  const details = await request(wx, apiBase, { method: 'POST', path: '/payments/details', data, token });
  const settled = await waitForFinal(wx, apiBase, token, details, poll);
  return outcome(settled, payment, errMsg);
}

/** The attempt failed: pay() again with the same order starts a new attempt. */
function canRetry(result) {
  return RETRYABLE_STATES.includes(result.state);
}

/** What to tell the shopper, from the server's state only. */
function messageFor(result) {
  switch (result.state) {
    case 'Authorised':
      return 'Payment successful';
    case 'Refused':
      return 'Payment not completed';
    case 'Error':
      return 'Payment failed, please try again';
    default:
      return 'Payment is being confirmed';
  }
}

module.exports = { pay, canRetry, messageFor, PayError, FINAL_STATES };
