"""SQLite storage: the one database that holds all PDS state (see ARCHITECTURE.md)."""
