"""Settlement: what each partner earned per day and per month, statements, payouts and the
reconciliation against the wallet's ledger. Reads the wallet; the wallet never imports it."""
