"""Acepilot: self-hosted, private code completion.

One import namespace for the whole distribution, so that installing Acepilot
never puts generic top-level names (``server``, ``training``) into
site-packages: ``acepilot.server`` serves completions without torch,
``acepilot.training`` produces the models it serves.
"""
