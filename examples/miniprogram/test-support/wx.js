// A stand-in for the Mini Program's `wx` object: real HTTP for wx.request, and a wx.requestPayment
// that checks the paySign the way WeChat does before the sandbox (POST /_sandbox/wechat/pay) decides.
'use strict';

const crypto = require('node:crypto');

// The sandbox's well-known paySign key (miniprogram_pay.sandbox.DEFAULT_PAYSIGN_KEY).
const SANDBOX_PAYSIGN_KEY = 'Ukx4vBr14f0iPEWcJ2quAPX9hz8V4NV8';

/** WeChat Pay API v2 MD5 signature of the wx.requestPayment parameters. */
function md5PaySign(params, key) {
  const names = ['appId', 'nonceStr', 'package', 'signType', 'timeStamp'];
  const text = names.map((name) => `${name}=${params[name]}`).join('&') + `&key=${key}`;
  return crypto.createHash('md5').update(text, 'utf8').digest('hex').toUpperCase();
}

/**
 * outcome: what the shopper does in the payment sheet ('ok' | 'cancel' | 'fail').
 * tamper: change the paySign on its way into wx.requestPayment (WeChat must refuse it).
 */
function createWx({ sandboxUrl, appId, shopper = 'alice', outcome = 'ok', tamper = false }) {
  const calls = { requests: [], payments: [] };
  let codes = 0;

  const wx = {
    calls,
    login({ success }) {
      codes += 1;
      setImmediate(() => success({ code: `${shopper}.${process.pid}.${Date.now()}.${codes}`, errMsg: 'login:ok' }));
    },

    request({ url, method = 'GET', data, header = {}, success, fail }) {
      calls.requests.push({ url, method, data });
      const body = method === 'GET' || data === undefined ? undefined : JSON.stringify(data);
      fetch(url, { method, headers: header, body })
        .then(async (res) => {
          const text = await res.text();
          let parsed = text;
          try {
            parsed = JSON.parse(text);
          } catch (_) {
            // wx.request hands over non-JSON bodies as strings
          }
          success({ statusCode: res.status, data: parsed, header: Object.fromEntries(res.headers), errMsg: 'request:ok' });
        })
        .catch((error) => fail({ errMsg: `request:fail ${error.message}` }));
    },

    requestPayment(options) {
      const params = {
        appId,
        timeStamp: options.timeStamp,
        nonceStr: options.nonceStr,
        package: options.package,
        signType: options.signType,
        paySign: tamper ? flip(options.paySign) : options.paySign,
      };
      const signedHere = params.signType === 'MD5' && md5PaySign(params, SANDBOX_PAYSIGN_KEY) === params.paySign;
      fetch(`${sandboxUrl}/_sandbox/wechat/pay`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...params, outcome }),
      })
        .then((res) => res.json())
        .then(({ errMsg }) => {
          calls.payments.push({ params, signedHere, errMsg });
          if (!signedHere && errMsg === 'requestPayment:ok') {
            throw new Error('the sandbox accepted a paySign that WeChat would refuse');
          }
          if (errMsg === 'requestPayment:ok') options.success({ errMsg });
          else options.fail({ errMsg });
        })
        .catch((error) => options.fail({ errMsg: `requestPayment:fail ${error.message}` }));
    },
  };
  return wx;
}

function flip(sign) {
  const last = sign.slice(-1) === '0' ? '1' : '0';
  return sign.slice(0, -1) + last;
}

module.exports = { createWx, md5PaySign, SANDBOX_PAYSIGN_KEY };
