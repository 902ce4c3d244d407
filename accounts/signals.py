"""Signals that other apps listen to. Accounts sits at the bottom of the import chain, so it
announces what happened and the apps above it (partners) decide what that means for them."""

from django.dispatch import Signal

# Staff ended every session of a person (e.g. a stolen phone). Sent inside the transaction
# that ended them, with keyword argument `user`; receivers write in that same transaction.
user_signed_out_everywhere = Signal()

# One session of a person ended while they stayed signed in elsewhere (they signed out another
# device, or changed their password). Sent inside that transaction with keyword arguments
# `user`, `sid` (the session's OpenID session id, "" if it had none) and `started_at` (when it
# signed in, or None).
user_session_ended = Signal()
