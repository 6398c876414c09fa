BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> aaa1

CREATE TABLE account (
    id SERIAL NOT NULL, 
    name VARCHAR(50) NOT NULL, 
    PRIMARY KEY (id)
);

INSERT INTO alembic_version (version_num) VALUES ('aaa1') RETURNING alembic_version.version_num;

-- Running upgrade aaa1 -> ccc3

ALTER TABLE account ADD COLUMN note TEXT;

UPDATE account SET note = 'it''s; here' WHERE note IS NULL;

UPDATE alembic_version SET version_num='ccc3' WHERE alembic_version.version_num = 'aaa1';

-- Running upgrade aaa1 -> bbb2

COMMIT;

CREATE INDEX CONCURRENTLY account_name_idx ON account (name);

BEGIN;

INSERT INTO alembic_version (version_num) VALUES ('bbb2') RETURNING alembic_version.version_num;

-- Running upgrade bbb2, ccc3 -> ddd4

DELETE FROM alembic_version WHERE alembic_version.version_num = 'bbb2';

UPDATE alembic_version SET version_num='ddd4' WHERE alembic_version.version_num = 'ccc3';

COMMIT;

