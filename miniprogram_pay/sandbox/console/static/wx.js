// The console's `wx`: what a Mini Program's runtime gives the client module (client/pay.js).
//   wx.login          a sandbox code "<shopper>.<random>" (the sandbox logs <shopper> in)
//   wx.request        sent to the merchant by the sandbox's relay, as WeChat's client sends it
//   wx.requestPayment the WeChat pay sheet: `choose(params)` resolves 'ok' | 'cancel' | 'fail', then
//                     WeChat (the sandbox) checks the paySign and answers the errMsg
(function () {
  'use strict';

  function randomHex(bytes) {
    const values = crypto.getRandomValues(new Uint8Array(bytes));
    return Array.from(values, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  /**
   * base: the sandbox's URL prefix ('' at the root); run: this console run's id (tags the relay's records);
   * appId: the Mini Program's AppID; shopper(): the login name; onAnswer(url, res): every wx.request answer;
   * choose(params): the shopper's choice in the pay sheet.
   */
  function createWx({ base, run, appId, shopper, onAnswer = () => {}, choose }) {
    const post = (path, body) =>
      fetch(base + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'X-Sandbox-Console': '1' },
        body: JSON.stringify(body),
      }).then(async (response) => {
        const answer = await response.json();
        if (!response.ok) throw new Error(answer.error || `sandbox answered ${response.status}`);
        return answer;
      });

    return {
      login({ success, fail }) {
        const code = `${shopper()}.${randomHex(6)}`;
        setTimeout(() => (code ? success({ code, errMsg: 'login:ok' }) : fail({ errMsg: 'login:fail' })), 0);
      },

      request({ url, method = 'GET', data, header = {}, success, fail }) {
        post('/_sandbox/console/relay', { run, url, method, header, data })
          .then((res) => {
            if (res.errMsg !== 'request:ok') return fail({ errMsg: res.errMsg });
            onAnswer(url, res);
            return success(res);
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
          paySign: options.paySign,
        };
        Promise.resolve(choose(params))
          .then((outcome) => post('/_sandbox/wechat/pay', Object.assign({}, params, { outcome })))
          .then(({ errMsg }) => (errMsg === 'requestPayment:ok' ? options.success({ errMsg }) : options.fail({ errMsg })))
          .catch((error) => options.fail({ errMsg: `requestPayment:fail ${error.message}` }));
      },
    };
  }

  window.ConsoleWx = { createWx, randomHex };
})();
