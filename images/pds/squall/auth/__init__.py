"""Authentication: passwords, legacy session JWTs, app passwords, the admin credential."""
