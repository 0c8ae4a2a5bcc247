"""A local sandbox fleet: real Debian hosts (systemd + sshd) as systemd-nspawn containers."""
