BEGIN;

-- Running downgrade ddd4 -> bbb2, ccc3

INSERT INTO alembic_version (version_num) VALUES ('bbb2') RETURNING alembic_version.version_num;

UPDATE alembic_version SET version_num='ccc3' WHERE alembic_version.version_num = 'ddd4';

-- Running downgrade bbb2 -> aaa1

COMMIT;

DROP INDEX CONCURRENTLY account_name_idx;

BEGIN;

DELETE FROM alembic_version WHERE alembic_version.version_num = 'bbb2';

-- Running downgrade ccc3 -> aaa1

