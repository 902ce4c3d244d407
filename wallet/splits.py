"""Who earns what from a charge. The settlement work plugs partner agreements in here; until
then the platform keeps everything.

Contract: return legs of non-negative integers that sum to exactly ``amount``. The capture
posts them in the same ledger transaction as the debit of the user's wallet."""

from partners.models import Application
from wallet.ledger import Leg, system_account
from wallet.models import LedgerAccount, Price


def capture_split(*, app: Application, price: Price, amount: int) -> list[Leg]:
    """Split ``amount`` between the app's partner payable, the model vendor's payable and the
    platform's revenue."""
    return [(system_account(LedgerAccount.Kind.PLATFORM_REVENUE), amount)]
