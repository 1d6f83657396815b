"""Which methods may be proxied or service-authed, and by whom (the reference PDS's lists).

* Protected methods manage the account itself (email, password-like secrets, identity, account
  state). They are only ever called on the PDS directly: never proxied and never put in a
  service-auth token, so a third-party service can never be handed the power to run them.
* Privileged methods (direct messages, account creation elsewhere) need a full session or a
  privileged app password; an ordinary app password is refused. The chat methods are listed one
  by one as the reference does (its current list, reactions and convo requests included); other
  ``chat.bsky.*`` methods (the chat service's moderation API) are not privileged.
* Taken-down accounts: their session (scope ``com.atproto.takendown``) may still call the methods
  of ``TAKENDOWN_ALLOWED`` (reporting and reading preferences, for an appeal), nothing else.

Matching ignores case, as the reference does, so ``Chat.Bsky.Convo.SendMessage`` cannot slip past.
"""

from __future__ import annotations

CHAT_BSKY_METHODS = frozenset({
    "chat.bsky.actor.deleteAccount",
    "chat.bsky.actor.exportAccountData",
    "chat.bsky.convo.acceptConvo",
    "chat.bsky.convo.addReaction",
    "chat.bsky.convo.deleteMessageForSelf",
    "chat.bsky.convo.getConvo",
    "chat.bsky.convo.getConvoAvailability",
    "chat.bsky.convo.getConvoForMembers",
    "chat.bsky.convo.getLog",
    "chat.bsky.convo.getMessages",
    "chat.bsky.convo.leaveConvo",
    "chat.bsky.convo.listConvos",
    "chat.bsky.convo.muteConvo",
    "chat.bsky.convo.removeReaction",
    "chat.bsky.convo.sendMessage",
    "chat.bsky.convo.sendMessageBatch",
    "chat.bsky.convo.unmuteConvo",
    "chat.bsky.convo.updateAllRead",
    "chat.bsky.convo.updateRead",
})

PRIVILEGED_METHODS = CHAT_BSKY_METHODS | {"com.atproto.server.createAccount"}

PROTECTED_METHODS = frozenset({
    "com.atproto.admin.sendEmail",
    "com.atproto.identity.requestPlcOperationSignature",
    "com.atproto.identity.signPlcOperation",
    "com.atproto.identity.updateHandle",
    "com.atproto.server.activateAccount",
    "com.atproto.server.confirmEmail",
    "com.atproto.server.createAppPassword",
    "com.atproto.server.deactivateAccount",
    "com.atproto.server.getAccountInviteCodes",
    "com.atproto.server.getSession",
    "com.atproto.server.listAppPasswords",
    "com.atproto.server.requestAccountDelete",
    "com.atproto.server.requestEmailConfirmation",
    "com.atproto.server.requestEmailUpdate",
    "com.atproto.server.revokeAppPassword",
    "com.atproto.server.updateEmail",
})

_PRIVILEGED_LOWER = frozenset(m.lower() for m in PRIVILEGED_METHODS)
_PROTECTED_LOWER = frozenset(m.lower() for m in PROTECTED_METHODS)


def is_protected(nsid: str) -> bool:
    return nsid.lower() in _PROTECTED_LOWER


def is_privileged(nsid: str) -> bool:
    return nsid.lower() in _PRIVILEGED_LOWER


TAKENDOWN_ALLOWED = frozenset({"com.atproto.moderation.createReport", "app.bsky.actor.getPreferences"})
_TAKENDOWN_ALLOWED_LOWER = frozenset(m.lower() for m in TAKENDOWN_ALLOWED)


def allows_takendown(nsid: str) -> bool:
    return nsid.lower() in _TAKENDOWN_ALLOWED_LOWER
