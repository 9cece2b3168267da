"""npulab.hosts: the lab inventory and its credentials."""
