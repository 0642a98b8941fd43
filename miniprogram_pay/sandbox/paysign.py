"""WeChat's ``wx.requestPayment`` signatures (API v2), as WeChat computes them.

In production Adyen signs these parameters; only a simulator needs the
algorithm. Both variants sign the same string: the parameters sorted by name,
joined as ``k=v`` with ``&``, then ``&key=<API key>`` appended.

Example (WeChat's worked example)::

    >>> md5_pay_sign({"appId": "wxd678efh567hg6787",
    ...               "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    ...               "package": "prepay_id=wx2017033010242291fcfe0db70013231072",
    ...               "signType": "MD5", "timeStamp": "1490840662"},
    ...              "qazwsxedcrfvtgbyhnujmikolp111111")
    '22D9B4E54AB1950F51E0649E8810ACD6'
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["SIGNED_PARAMS", "hmac_sha256_pay_sign", "md5_pay_sign", "pay_sign", "verify_pay_sign"]

SIGNED_PARAMS = ("appId", "nonceStr", "package", "signType", "timeStamp")


def string_to_sign(params: Mapping[str, str], key: str) -> str:
    """``appId=...&nonceStr=...&package=...&signType=...&timeStamp=...&key=<key>``."""
    # WeChat skips empty values; the five parameters are never empty in a valid call.
    pairs = [f"{name}={params[name]}" for name in sorted(SIGNED_PARAMS) if params.get(name)]
    return "&".join([*pairs, f"key={key}"])


def md5_pay_sign(params: Mapping[str, str], key: str) -> str:
    """paySign for ``signType=MD5``: uppercase hex MD5 of the string to sign."""
    digest = hashlib.md5(string_to_sign(params, key).encode("utf-8"), usedforsecurity=False)
    return digest.hexdigest().upper()


def hmac_sha256_pay_sign(params: Mapping[str, str], key: str) -> str:
    """paySign for ``signType=HMAC-SHA256``: uppercase hex HMAC keyed with the API key."""
    message = string_to_sign(params, key).encode("utf-8")
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest().upper()


def pay_sign(params: Mapping[str, str], key: str) -> str:
    """The paySign for ``params["signType"]`` (MD5 or HMAC-SHA256)."""
    if params.get("signType") == "HMAC-SHA256":
        return hmac_sha256_pay_sign(params, key)
    if params.get("signType") == "MD5":
        return md5_pay_sign(params, key)
    raise ValueError(f"unsupported signType {params.get('signType')!r}")


def verify_pay_sign(params: Mapping[str, str], key: str) -> bool:
    """True when ``params["paySign"]`` is right for the other parameters (constant time)."""
    try:
        expected = pay_sign(params, key)
    except ValueError:
        return False
    received = str(params.get("paySign", ""))
    return hmac.compare_digest(expected.encode(), received.encode("utf-8", "replace"))
