"""Smoke test and chat: ``config`` renders the runner's settings from the recipe; ``runner`` is
the standalone script that runs inside the 1.1 conda env; ``run`` drives it here or on a host."""
