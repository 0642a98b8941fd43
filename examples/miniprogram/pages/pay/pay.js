// The payment page: one button, and the outcome as the server reports it.
const { pay, messageFor } = require('../../lib/pay.js');

const app = getApp();

Page({
  data: {
    orderId: 'A42',
    // Shown for the shopper; the server decides the real amount from the order.
    amountText: 'CNY 11.30',
    busy: false,
    state: '',
    message: '',
  },

  onLoad(query) {
    if (query.orderId) this.setData({ orderId: query.orderId });
  },

  onPay() {
    this.setData({ busy: true, message: '' });
    pay({ wx, apiBase: app.globalData.apiBase, order: { orderId: this.data.orderId } })
      .then((result) => this.setData({ state: result.state, message: messageFor(result) }))
      .catch((error) => this.setData({ state: 'Error', message: error.message }))
      .then(() => this.setData({ busy: false }));
  },
});
