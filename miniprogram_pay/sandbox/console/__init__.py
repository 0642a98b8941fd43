"""The sandbox console: a page that plays the shopper's Mini Program and Adyen, with a timeline.

Served by the sandbox app at ``/``. The page drives any host's mounted plugin
by its base URL, through the same client module as ``examples/miniprogram``
(``client/pay.js``, kept identical to ``examples/miniprogram/lib/pay.js``) with
a ``wx`` of its own: ``wx.login`` gives a sandbox code, ``wx.request`` goes
through the sandbox's relay (as WeChat's client sends it, without CORS), and
``wx.requestPayment`` shows WeChat's pay sheet. Adyen's side is steered with
the control API; the timeline merges the sandbox's records with the host's
admin view of the payment. See ``docs/sandbox.md``.
"""

from __future__ import annotations

from miniprogram_pay.sandbox.console.routes import Console, default_api_url

__all__ = ["Console", "default_api_url"]
