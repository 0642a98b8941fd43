"""Money: integer minor units with an ISO 4217 currency. Never floats."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SUPPORTED_CURRENCIES", "Amount"]

# Currencies WeChat Pay accepts through Adyen, with their ISO 4217 minor-unit exponent.
SUPPORTED_CURRENCIES: dict[str, int] = {
    "AUD": 2,
    "CAD": 2,
    "CNY": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "JPY": 0,
    "NZD": 2,
    "SGD": 2,
    "USD": 2,
}

# Adyen's amount.value is int64; anything larger cannot be a real payment.
MAX_MINOR_UNITS = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Amount:
    """An amount in minor units (``value=1130, currency="CNY"`` is CNY 11.30)."""

    value: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.value) is not int:
            raise ValueError("amount value must be an integer number of minor units")
        if self.currency not in SUPPORTED_CURRENCIES:
            raise ValueError(f"unsupported currency {self.currency!r}")
        if not 0 < self.value <= MAX_MINOR_UNITS:
            raise ValueError("amount value must be positive")

    def to_adyen(self) -> dict[str, object]:
        return {"currency": self.currency, "value": self.value}

    def __str__(self) -> str:
        exponent = SUPPORTED_CURRENCIES[self.currency]
        if exponent == 0:
            return f"{self.currency} {self.value}"
        whole, minor = divmod(self.value, 10**exponent)
        return f"{self.currency} {whole}.{minor:0{exponent}d}"
