// lib/pay.js against the real server and sandbox: node --test examples/miniprogram/test/
// (helpers live in ../test-support so that node --test does not run them as test files)
'use strict';

const { after, before, describe, test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const { pay, canRetry, messageFor, PayError } = require('../lib/pay.js');
const { startServer } = require('../test-support/server.js');
const { createWx, md5PaySign } = require('../test-support/wx.js');

const APP_ID = 'wxsandbox0000000001';
const FAST_POLL = { attempts: 40, intervalMs: 100 };

function order(scenario = 'authorised') {
  return { reference: `mp-sbx-${scenario}-${crypto.randomBytes(3).toString('hex')}`, amount: { currency: 'CNY', value: 1130 } };
}

describe('md5PaySign', () => {
  test("matches WeChat's documented example", () => {
    const params = {
      appId: 'wxd678efh567hg6787',
      nonceStr: '5K8264ILTKCH16CQ2502SI8ZNMTM67VS',
      package: 'prepay_id=wx2017033010242291fcfe0db70013231072',
      signType: 'MD5',
      timeStamp: '1490840662',
    };
    assert.equal(md5PaySign(params, 'qazwsxedcrfvtgbyhnujmikolp111111'), '22D9B4E54AB1950F51E0649E8810ACD6');
  });
});

describe('pay() against `miniprogram-pay serve --sandbox`', () => {
  let server;

  before(async () => {
    server = await startServer();
  });

  after(async () => {
    if (server) await server.stop();
  });

  async function serverState(reference) {
    const res = await fetch(`${server.apiBase}/payments/${reference}`, { headers: { 'X-Admin-Key': server.adminKey } });
    assert.equal(res.status, 200);
    return (await res.json()).state;
  }

  function shopperWx(options) {
    return createWx({ sandboxUrl: server.sandboxUrl, appId: APP_ID, ...options });
  }

  test('ok -> Authorised', async () => {
    const wx = shopperWx({ outcome: 'ok' });
    const result = await pay({ wx, apiBase: server.apiBase, order: order(), poll: FAST_POLL });
    assert.equal(result.state, 'Authorised');
    assert.equal(result.clientErrMsg, 'requestPayment:ok');
    assert.equal(messageFor(result), 'Payment successful');
    assert.equal(wx.calls.payments[0].signedHere, true);
    assert.equal(await serverState(result.reference), 'Authorised');
  });

  test('cancel is reported to the server -> Refused', async () => {
    const wx = shopperWx({ outcome: 'cancel' });
    const result = await pay({ wx, apiBase: server.apiBase, order: order(), poll: FAST_POLL });
    const details = wx.calls.requests.find((r) => r.url.endsWith('/payments/details'));
    assert.deepEqual(details.data.details, { paymentStatus: 'requestPayment:fail cancel' });
    assert.equal(result.state, 'Refused');
    assert.equal(result.clientErrMsg, 'requestPayment:fail cancel');
    assert.equal(await serverState(result.reference), 'Refused');
  });

  test('a tampered paySign fails in requestPayment, and the failure is reported', async () => {
    const wx = shopperWx({ outcome: 'ok', tamper: true });
    const result = await pay({ wx, apiBase: server.apiBase, order: order(), poll: FAST_POLL });
    assert.equal(wx.calls.payments[0].signedHere, false);
    assert.equal(result.clientErrMsg, 'requestPayment:fail invalid paySign');
    assert.equal(result.state, 'Refused');
    assert.notEqual(messageFor(result), 'Payment successful');
    assert.equal(await serverState(result.reference), 'Refused');
  });

  test("the server's state wins over the client callback", async () => {
    // The shopper paid (callback: requestPayment:ok) but Adyen refuses the payment.
    const wx = shopperWx({ outcome: 'ok' });
    const result = await pay({ wx, apiBase: server.apiBase, order: order('refused'), poll: FAST_POLL });
    assert.equal(result.clientErrMsg, 'requestPayment:ok');
    assert.equal(result.state, 'Refused');
    assert.equal(result.refusalReason, 'Not enough balance');
    assert.equal(messageFor(result), 'Payment not completed');
    assert.equal(canRetry(result), true);
  });

  test('refused, then paid on retry with the same order', async () => {
    const shop = order('retry-after-refusal');
    const first = await pay({ wx: shopperWx({ outcome: 'ok' }), apiBase: server.apiBase, order: shop, poll: FAST_POLL });
    assert.equal(first.state, 'Refused');
    assert.equal(canRetry(first), true);
    assert.deepEqual([first.attempt, first.reference, first.orderReference], [1, shop.reference, shop.reference]);
    const wx = shopperWx({ outcome: 'ok' });
    const second = await pay({ wx, apiBase: server.apiBase, order: shop, poll: FAST_POLL });
    assert.equal(second.state, 'Authorised');
    assert.equal(canRetry(second), false);
    assert.deepEqual([second.attempt, second.reference, second.orderReference], [2, `${shop.reference}-2`, shop.reference]);
    const details = wx.calls.requests.find((r) => r.url.endsWith('/payments/details'));
    assert.equal(details.data.reference, `${shop.reference}-2`);
    assert.equal(await serverState(shop.reference), 'Authorised');
    // Once paid, the order hands out nothing more to pay.
    const again = await pay({ wx: shopperWx({ outcome: 'ok' }), apiBase: server.apiBase, order: shop, poll: FAST_POLL });
    assert.deepEqual([again.state, again.attempt, again.clientErrMsg], ['Authorised', 2, null]);
  });

  test('a Pending answer is followed until the webhook settles it', async () => {
    const wx = shopperWx({ outcome: 'ok' });
    const result = await pay({ wx, apiBase: server.apiBase, order: order('pending-then-webhook'), poll: FAST_POLL });
    assert.equal(result.state, 'Authorised');
  });

  test('a reference with "/" is paid and read back through encodeURIComponent', async () => {
    const wx = shopperWx({ outcome: 'ok' });
    const shop = order();
    shop.reference = `shop/${shop.reference}`;
    const result = await pay({ wx, apiBase: server.apiBase, order: shop, poll: FAST_POLL });
    assert.equal(result.reference, shop.reference);
    assert.equal(result.state, 'Authorised');
    // What the client's polling sends (lib/pay.js), and the same reference unencoded.
    for (const path of [encodeURIComponent(shop.reference), shop.reference]) {
      const res = await fetch(`${server.apiBase}/payments/${path}`, { headers: { 'X-Admin-Key': server.adminKey } });
      assert.equal(res.status, 200);
      assert.equal((await res.json()).reference, shop.reference);
    }
    const polls = wx.calls.requests.filter((r) => r.method === 'GET');
    assert.ok(polls.every((r) => r.url.includes('/payments/shop%2F')));
  });

  test('an API error rejects with its code', async () => {
    const wx = shopperWx({});
    const bad = { reference: 'mp-bad-amount', amount: { currency: 'XXX', value: 1 } };
    await assert.rejects(pay({ wx, apiBase: server.apiBase, order: bad }), (error) => {
      assert.ok(error instanceof PayError);
      assert.equal(error.code, 'invalid_currency');
      assert.equal(error.statusCode, 400);
      return true;
    });
  });
});
