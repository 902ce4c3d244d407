from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class PartnersConfig(AppConfig):
    name = "partners"
    verbose_name = _("Partners")

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from accounts.signals import user_session_ended, user_signed_out_everywhere
        from partners import admin_logout  # noqa: F401 (registers the delivery admin)
        from partners.oauth.backchannel import (
            on_user_logged_out,
            on_user_session_ended,
            on_user_signed_out_everywhere,
        )

        # Every way a Tokenpass session ends through django.contrib.auth.logout (our sign-out
        # view, DOT's RP-initiated logout) tells the person's apps over the back channel.
        user_logged_out.connect(on_user_logged_out, dispatch_uid="partners.backchannel_logout")
        # Staff signing a person out everywhere ends their sessions at the apps too.
        user_signed_out_everywhere.connect(
            on_user_signed_out_everywhere, dispatch_uid="partners.backchannel_logout_everywhere"
        )
        # So does a person ending one of their other sessions (or all of them but this one).
        user_session_ended.connect(
            on_user_session_ended, dispatch_uid="partners.backchannel_logout_session"
        )
