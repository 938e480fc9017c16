"""Operations: the configuration file, socket ownership, pid file, systemd activation."""
