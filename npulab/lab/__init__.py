"""npulab.lab: probe, provision and the Ansible checks of the lab machines."""
