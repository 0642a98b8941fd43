"""The back office: pages a person reads in a browser, served by the plugin under ``/admin/office``.

The payments list with the admin API's filters, the inbox and outbox at a glance,
one payment's time line with its state diagram and its refunds, and requeue of
parked items and refunds, each after a confirmation (``refunds.py``).
Server-rendered with Jinja2 (``miniprogram_pay.pages``), no build step; the admin
key signs a person in (``auth.py``), every action is CSRF-safe.
"""
