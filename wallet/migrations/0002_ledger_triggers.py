"""Database guarantees of the ledger on PostgreSQL: the entries of a transaction sum to zero
(checked at commit, so a transaction's legs may be inserted one by one), and ledger rows are
insert-only. SQLite (local development) skips them; the suite runs on PostgreSQL."""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION wallet_ledger_balanced() RETURNS trigger AS $$
DECLARE
    total numeric;
BEGIN
    SELECT COALESCE(SUM(amount), 0) INTO total
        FROM wallet_ledgerentry WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced: entries sum to %',
            NEW.transaction_id, total USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER wallet_ledgerentry_balanced
    AFTER INSERT ON wallet_ledgerentry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION wallet_ledger_balanced();

CREATE OR REPLACE FUNCTION wallet_ledger_insert_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% rows are insert-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER wallet_ledgerentry_insert_only
    BEFORE UPDATE OR DELETE ON wallet_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION wallet_ledger_insert_only();
CREATE TRIGGER wallet_ledgertransaction_insert_only
    BEFORE UPDATE OR DELETE ON wallet_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION wallet_ledger_insert_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS wallet_ledgertransaction_insert_only ON wallet_ledgertransaction;
DROP TRIGGER IF EXISTS wallet_ledgerentry_insert_only ON wallet_ledgerentry;
DROP TRIGGER IF EXISTS wallet_ledgerentry_balanced ON wallet_ledgerentry;
DROP FUNCTION IF EXISTS wallet_ledger_insert_only();
DROP FUNCTION IF EXISTS wallet_ledger_balanced();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("wallet", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
