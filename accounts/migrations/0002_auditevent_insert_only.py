from django.db import migrations

FORBID = """
CREATE OR REPLACE FUNCTION tokenpass_forbid_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% rows are insert-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER accounts_auditevent_insert_only
    BEFORE UPDATE OR DELETE ON accounts_auditevent
    FOR EACH ROW EXECUTE FUNCTION tokenpass_forbid_change();
"""
ALLOW = """
DROP TRIGGER IF EXISTS accounts_auditevent_insert_only ON accounts_auditevent;
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORBID, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ALLOW, params=None)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
