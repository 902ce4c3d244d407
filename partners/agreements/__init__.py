"""Partner agreements: who earns what from a charge, version by version.

Partners core: this package never imports the wallet. The wallet reads agreements through
``partners.agreements.selectors`` and records the attribution of each split through
``partners.agreements.services.split_lines_record``.
"""
