"""miniprogram-pay."""
