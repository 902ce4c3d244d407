from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class PartnersConfig(AppConfig):
    name = "partners"
    verbose_name = _("Partners")

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import post_delete, post_save

        from accounts.signals import user_session_ended, user_signed_out_everywhere
        from partners import admin_logout  # noqa: F401 (registers the delivery admin)
        from partners.models import Application, ApplicationReview, Partner
        from partners.oauth import clientcache
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
        # An app, partner or review changed in this process: the client credentials grant
        # forgets the apps it remembered (other processes within OAUTH_CLIENT_CACHE_SECONDS).
        for model in (Application, Partner, ApplicationReview):
            for signal in (post_save, post_delete):
                signal.connect(
                    clientcache.forget,
                    sender=model,
                    dispatch_uid=f"partners.clientcache.{signal is post_save}.{model.__name__}",
                )
