"""Invoke adapters: a few lines per task that parse arguments and call the npulab package.

Each module here defines either ``ns`` (a namespaced Collection, e.g. ``patches``) and/or
``ROOT_TASKS`` (tasks at the top level, e.g. ``build``). ``tasks.py`` discovers them. Keep heavy
imports (torch, transformers, winrm, ansible) inside task bodies: ``invoke --list`` must stay fast.
"""
