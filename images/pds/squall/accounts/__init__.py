"""Accounts: handles, invite codes, passwords, sessions and the repository every account starts with.

The functions here hold the rules and the SQL; ``squall.xrpc.server`` turns them into the
``com.atproto.server`` methods. Writes run as one function on the database's writer thread
(``Database.write``), so an account, its first commit and its firehose events are stored together.
"""
