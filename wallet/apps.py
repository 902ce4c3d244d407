from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class WalletConfig(AppConfig):
    name = "wallet"
    verbose_name = _("Wallet")

    def ready(self) -> None:
        from partners.oauth.spending import spending_limits_register
        from wallet.spending import WalletSpendingLimits

        # The consent page asks for the wallet's monthly limit without importing the wallet.
        spending_limits_register(WalletSpendingLimits())
