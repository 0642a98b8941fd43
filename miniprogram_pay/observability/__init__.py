"""What operators watch: metrics (``metrics.py``, ``prometheus.py``), request ids and logs.

``metrics.Metrics`` is the one interface the rest of the package records through;
``prometheus.PrometheusMetrics`` implements it with prometheus-client (an extra),
``metrics.NO_METRICS`` records nothing. ``context`` carries the request id of the
request being served, ``logs`` formats log lines (text or JSON) with it.
"""
