// The merchant's server, where miniprogram-pay is mounted (add its domain to the request whitelist).
App({
  globalData: {
    apiBase: 'https://shop.example/pay',
  },
});
